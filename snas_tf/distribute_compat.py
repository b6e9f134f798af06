"""Keras 3.15 + `tf.distribute.MultiWorkerMirroredStrategy`: a small shim.

The bug (keras-team/keras#20585, reported on Keras 3.7, still open;
reproduced on 3.15.1): stock `fit` and `evaluate` fail as soon as the
strategy really spans several workers (TF_CONFIG with more than one task).
Two spots of `keras/src/backend/tensorflow/trainer.py` are at fault
(`predict` uses neither and works):

1. `TensorFlowTrainer._maybe_symbolic_build` takes the first distributed
   batch and calls `strategy.reduce("MEAN", batch, axis=None)` on the whole
   nested `(x, y)` structure. MultiWorkerMirroredStrategy's `reduce` takes
   one value, not a structure, and fails with "Attempt to convert a value
   (PerReplica ...) to a Tensor". The batch is only used for its shapes
   and dtypes (to build the model symbolically), so no cross-worker
   reduction is needed at all.
2. `reduce_per_replica` (the metrics returned by every train / test step)
   uses `strategy.reduce("MEAN", v, axis=0)` on its multi-worker branch.
   The step's metrics are scalars, and a scalar has no axis 0 ("Invalid
   reduction dimension 0 for input with 0 dimensions" while tracing the
   step). Every other strategy takes the element-wise mean over the
   replicas, i.e. `axis=None`.

`patch_keras_for_multi_worker()` wraps exactly these two functions. The
wrappers only act when the strategy runs in multi-worker mode (Keras' own
test, `_collective_all_reduce_multi_worker`); otherwise they call the
originals unchanged, so one-device and mirrored training are not touched.
The fix of spot 1 takes the first local replica's slice of the batch; the
fix of spot 2 reduces with `axis=None`, as the single-worker branch does.

Targets Keras 3.15 (written against 3.15.1). If the wrapped internals are
missing or their signatures changed, the patch is a no-op with a warning;
on another Keras version it warns so someone re-checks it.

When to delete this module: once the pinned Keras fixes #20585. Check by
removing the `patch_keras_for_multi_worker()` call in
`snas_tf.strategy.make_strategy` and running
`tests/trainers/multi_worker_test.py`; if it passes, delete this module
and its tests.
"""

import functools
import inspect
import warnings

import keras
import tensorflow as tf

TARGET_KERAS_VERSION = "3.15"
ISSUE = "keras-team/keras#20585"

# Attribute set on our wrappers, so a second call sees the patch.
_MARK = "_snas_tf_multi_worker_shim"

# The internals wrapped or called, with the parameters they must have.
_SIGNATURES = {
    "reduce_per_replica": ["values", "strategy", "reduction"],
    "_collective_all_reduce_multi_worker": ["strategy"],
    "TensorFlowTrainer._maybe_symbolic_build": [
        "self",
        "iterator",
        "data_batch",
    ],
}


def _trainer_module():
    """Keras' TF trainer module, or None where it does not exist."""
    try:
        from keras.src.backend.tensorflow import trainer
    except ImportError:
        return None
    return trainer


def _lookup(module, dotted_name):
    obj = module
    for part in dotted_name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return inspect.unwrap(obj)


def _missing_internals(module) -> list:
    """Names of the wrapped internals that are absent or changed."""
    if module is None:
        return ["keras.src.backend.tensorflow.trainer"]
    missing = []
    for name, params in _SIGNATURES.items():
        obj = _lookup(module, name)
        try:
            found = list(inspect.signature(obj).parameters) if obj else None
        except (TypeError, ValueError):
            found = None
        if found != params:
            missing.append(name)
    return missing


def _first_local_replica(strategy, batch):
    """The first local replica's part of a (nested) distributed batch."""

    def first(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    return keras.tree.map_structure(first, batch)


def _wrap_symbolic_build(original, is_multi_worker):
    @functools.wraps(original)
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is None or strategy is None:
            return original(self, iterator=iterator, data_batch=data_batch)
        if not is_multi_worker(strategy):
            return original(self, iterator=iterator, data_batch=data_batch)
        # As the original: peek at the first batch of the epoch iterator.
        # Only its shapes matter, so no cross-worker reduce (spot 1).
        for _, _, it in iterator:
            data_batch = _first_local_replica(strategy, next(it))
            break
        return original(self, data_batch=data_batch)

    setattr(_maybe_symbolic_build, _MARK, True)
    return _maybe_symbolic_build


def _wrap_reduce_per_replica(original, is_multi_worker):
    @functools.wraps(original)
    def reduce_per_replica(values, strategy, reduction):
        # "auto" is "mean" for every strategy but TPUStrategy.
        if reduction in ("auto", "mean") and is_multi_worker(strategy):
            # Element-wise mean over all replicas of all workers, as the
            # single-worker branch computes; axis=0 fails on scalars.
            return keras.tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None), values
            )
        return original(values, strategy, reduction)

    setattr(reduce_per_replica, _MARK, True)
    return reduce_per_replica


def is_patched() -> bool:
    """Whether `patch_keras_for_multi_worker()` is in effect."""
    module = _trainer_module()
    if module is None:
        return False
    return all(
        getattr(f, _MARK, False)
        for f in (
            module.reduce_per_replica,
            module.TensorFlowTrainer._maybe_symbolic_build,
        )
    )


def patch_keras_for_multi_worker() -> bool:
    """Lets Keras' TF trainer run under MultiWorkerMirroredStrategy.

    Wraps `reduce_per_replica` and `TensorFlowTrainer._maybe_symbolic_build`
    of `keras.src.backend.tensorflow.trainer` (see the module docstring).
    Idempotent; the wrappers defer to the originals for any strategy that
    is not MultiWorkerMirroredStrategy in multi-worker mode.

    Returns:
        True when the patch is in effect, False when it could not be
        applied (the Keras internals it wraps are missing or changed; a
        warning says which).
    """
    module = _trainer_module()
    missing = _missing_internals(module)
    if missing:
        warnings.warn(
            f"snas_tf.distribute_compat: Keras {keras.__version__} lacks "
            f"the internals the {ISSUE} shim wraps ({', '.join(missing)}); "
            "not patching. If multi-worker fit now works, delete the shim.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    if is_patched():
        return True
    if not keras.__version__.startswith(TARGET_KERAS_VERSION + "."):
        warnings.warn(
            f"snas_tf.distribute_compat targets Keras {TARGET_KERAS_VERSION}"
            f", found {keras.__version__}: check whether {ISSUE} is fixed "
            "and the shim can be deleted.",
            RuntimeWarning,
            stacklevel=2,
        )
    is_multi_worker = module._collective_all_reduce_multi_worker
    # Looked up by name at call time inside the trainer, so rebinding the
    # module attribute reaches the train, test and predict functions.
    module.reduce_per_replica = _wrap_reduce_per_replica(
        module.reduce_per_replica, is_multi_worker
    )
    trainer_class = module.TensorFlowTrainer
    trainer_class._maybe_symbolic_build = _wrap_symbolic_build(
        trainer_class._maybe_symbolic_build, is_multi_worker
    )
    return True


__all__ = ["is_patched", "patch_keras_for_multi_worker"]
