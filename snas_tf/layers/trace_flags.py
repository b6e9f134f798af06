"""Python-side flags read while tracing: scoped, per thread, nestable."""

import contextlib
import threading

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
