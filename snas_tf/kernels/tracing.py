"""Trace-time plumbing of the search supernet: scoped flags, short names.

Python-side flags read while a graph is traced (scoped, per thread,
nestable), and the variable-naming scope of the supernet's build. None of
it changes what is computed; it changes how much work building and
tracing the supernet's thousands of layers costs.
"""

import contextlib
import threading

import tensorflow as tf

_STATE = threading.local()


@contextlib.contextmanager
def raised(name):
    """Sets flag `name` for the enclosed code, restoring it on exit."""
    previous = getattr(_STATE, name, False)
    setattr(_STATE, name, True)
    try:
        yield
    finally:
        setattr(_STATE, name, previous)


def is_raised(name) -> bool:
    return getattr(_STATE, name, False)


def built_by_mixing():
    """Edges first called inside skip their own build pass: the caller is
    an eager call in mixing mode (the supernet's build), which runs, and so
    builds, every op right away. Saves one eager run of every op."""
    return raised("built_by_mixing")


def recomputing():
    """Marks a `tf.recompute_grad` backward pass (in Python, so at trace
    time): the forward ops it re-runs must not update the moving statistics
    a second time."""
    return raised("recomputing")


def _short_name_creator(next_creator, **kwargs):
    if kwargs.get("name"):
        kwargs["name"] = kwargs["name"].rsplit("_", 1)[-1]
    with tf.name_scope(""):
        return next_creator(**kwargs)


def short_variable_names():
    """Gives the TensorFlow variables created inside short, repeating names.

    A TF variable's handle op carries its name (with the enclosing name
    scopes) as an attribute, so each of the supernet's thousands of
    variables would miss TensorFlow's eager kernel cache. Named by the last
    word of its Keras name only ("kernel", "mean", "momentum" for an
    optimizer slot), outside any name scope, a handle op's kernel is
    reused. Keras' own variable `name` and `path`, which checkpoints and
    logs use, are unchanged; only the underlying `tf.Variable.name` is
    short.
    """
    return tf.variable_creator_scope(_short_name_creator)
