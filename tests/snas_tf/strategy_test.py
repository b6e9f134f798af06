"""Tests for snas_tf.strategy and the Keras multi-worker shim
(snas_tf.distribute_compat); two real workers: tests/trainers/."""

import inspect
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as keras_trainer

from snas_tf import distribute_compat
from snas_tf.strategy import STRATEGIES, is_chief, make_strategy, worker_dir

Resolver = tf.distribute.cluster_resolver.SimpleClusterResolver


def _strategy(cluster=None, task_type=None, task_id=None):
    """A stand-in strategy with only the `cluster_resolver` attribute."""
    resolver = Resolver(
        tf.train.ClusterSpec(cluster or {}),
        task_type=task_type,
        task_id=task_id,
    )
    return types.SimpleNamespace(cluster_resolver=resolver)


TWO_WORKERS = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
WITH_CHIEF = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]}


@pytest.fixture
def unpatched(monkeypatch):
    """Keras' trainer as shipped during the test, and restored after it."""
    originals = {
        "reduce_per_replica": inspect.unwrap(keras_trainer.reduce_per_replica),
        "_maybe_symbolic_build": inspect.unwrap(
            keras_trainer.TensorFlowTrainer._maybe_symbolic_build
        ),
    }
    monkeypatch.setattr(
        keras_trainer, "reduce_per_replica", originals["reduce_per_replica"]
    )
    monkeypatch.setattr(
        keras_trainer.TensorFlowTrainer,
        "_maybe_symbolic_build",
        originals["_maybe_symbolic_build"],
    )
    assert not distribute_compat.is_patched()
    return originals


# make_strategy


def test_unknown_strategy_names_the_valid_choices():
    with pytest.raises(ValueError, match="'mirored'") as info:
        make_strategy("mirored")
    for name in STRATEGIES:
        assert repr(name) in str(info.value)


def test_default_and_one_device():
    assert make_strategy("default") is tf.distribute.get_strategy()
    one = make_strategy("one_device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert one.num_replicas_in_sync == 1


def test_multi_worker_mirrored_patches_keras_first(unpatched, monkeypatch):
    seen = []

    class FakeStrategy:
        def __init__(self):
            seen.append(distribute_compat.is_patched())

    # No real strategy: without TF_CONFIG it would still claim the devices.
    monkeypatch.setattr(
        tf.distribute, "MultiWorkerMirroredStrategy", FakeStrategy
    )
    assert isinstance(make_strategy("multi_worker_mirrored"), FakeStrategy)
    assert seen == [True]


# is_chief / worker_dir


@pytest.mark.parametrize(
    "strategy",
    [
        types.SimpleNamespace(),  # the default strategy has no resolver
        _strategy(),  # empty cluster: a local job
        _strategy(TWO_WORKERS, "worker", 0),  # no chief: worker 0 leads
        _strategy(WITH_CHIEF, "chief", 0),
        _strategy(TWO_WORKERS, None, None),
    ],
    ids=["no_resolver", "no_cluster", "worker0", "chief", "no_task"],
)
def test_chief_writes_into_model_dir(strategy, tmp_path):
    assert is_chief(strategy)
    assert worker_dir(strategy, tmp_path) == str(tmp_path)


@pytest.mark.parametrize(
    "strategy, task_id",
    [
        (_strategy(TWO_WORKERS, "worker", 1), 1),
        (_strategy(WITH_CHIEF, "worker", 0), 0),  # a chief exists
    ],
    ids=["worker1", "worker0_beside_chief"],
)
def test_other_workers_write_into_their_own_dir(strategy, task_id, tmp_path):
    assert not is_chief(strategy)
    expected = tmp_path / "workers" / str(task_id)
    assert worker_dir(strategy, tmp_path) == str(expected)


# The shim


def test_patch_is_idempotent(unpatched):
    assert distribute_compat.patch_keras_for_multi_worker()
    reduce_fn = keras_trainer.reduce_per_replica
    build_fn = keras_trainer.TensorFlowTrainer._maybe_symbolic_build
    assert distribute_compat.is_patched()
    assert distribute_compat.patch_keras_for_multi_worker()
    # Not wrapped twice: the same wrappers, each over Keras' function.
    assert keras_trainer.reduce_per_replica is reduce_fn
    assert keras_trainer.TensorFlowTrainer._maybe_symbolic_build is build_fn
    assert reduce_fn.__wrapped__ is unpatched["reduce_per_replica"]
    assert build_fn.__wrapped__ is unpatched["_maybe_symbolic_build"]


def _spies(monkeypatch, unpatched):
    """Replaces Keras' two functions by recording spies (same signatures,
    so the shim wraps them); returns the list of recorded calls."""
    calls = []

    def spy(name):
        original = unpatched[name]

        def record(*args, **kwargs):
            calls.append((name, args, kwargs))
            if name == "reduce_per_replica":  # the build needs a real model
                return original(*args, **kwargs)

        record.__wrapped__ = original  # inspect.signature follows it
        return record

    monkeypatch.setattr(
        keras_trainer, "reduce_per_replica", spy("reduce_per_replica")
    )
    monkeypatch.setattr(
        keras_trainer.TensorFlowTrainer,
        "_maybe_symbolic_build",
        spy("_maybe_symbolic_build"),
    )
    return calls


def _as_float(replica_id):
    return tf.cast(replica_id, "float32")


def _per_replica(strategy, fn):
    """`fn(replica id)` on every replica of `strategy`."""
    return strategy.run(
        lambda: fn(tf.distribute.get_replica_context().replica_id_in_sync_group)
    )


def test_other_strategies_call_keras_unchanged(
    unpatched, monkeypatch, mirrored
):
    calls = _spies(monkeypatch, unpatched)
    assert distribute_compat.patch_keras_for_multi_worker()
    values = {"loss": _per_replica(mirrored, _as_float)}
    for reduction in ("auto", "mean", "concat"):
        out = keras_trainer.reduce_per_replica(values, mirrored, reduction)
        assert calls.pop() == (
            "reduce_per_replica",
            (values, mirrored, reduction),
            {},
        )
    np.testing.assert_allclose(out["loss"], [0.0, 1.0])

    build = keras_trainer.TensorFlowTrainer._maybe_symbolic_build
    for strategy in (mirrored, None):
        model = types.SimpleNamespace(_distribute_strategy=strategy)
        build(model, iterator="iterator")
        assert calls.pop() == (
            "_maybe_symbolic_build",
            (model,),
            {"iterator": "iterator", "data_batch": None},
        )


def test_multi_worker_reduction_is_the_mean_over_replicas(mirrored):
    """The shim's reduction on the multi-worker path (here forced on the
    two local replicas): the element-wise mean, as every other strategy."""

    def must_not_run(*args):
        raise AssertionError("the multi-worker path must not call Keras")

    reduce_fn = distribute_compat._wrap_reduce_per_replica(
        must_not_run, is_multi_worker=lambda strategy: True
    )
    values = {
        "accuracy": _per_replica(mirrored, _as_float),
        "vector": _per_replica(
            mirrored, lambda i: tf.fill([3], 2 * _as_float(i))
        ),
    }
    out = reduce_fn(values, mirrored, "auto")
    np.testing.assert_allclose(out["accuracy"], 0.5)  # a scalar stays one
    np.testing.assert_allclose(out["vector"], [1.0, 1.0, 1.0])


def test_multi_worker_symbolic_build_takes_the_local_batch(mirrored):
    """On the multi-worker path the first batch is not reduced across
    workers: Keras builds from the first local replica's slice."""
    received = []

    def original(self, iterator=None, data_batch=None):
        received.append((iterator, data_batch))

    build = distribute_compat._wrap_symbolic_build(
        original, is_multi_worker=lambda strategy: True
    )
    images = tf.reshape(tf.range(4 * 2, dtype="float32"), (4, 2))
    dataset = tf.data.Dataset.from_tensors((images, tf.range(4)))
    batch = next(iter(mirrored.experimental_distribute_dataset(dataset)))
    iterator = [(0, 0, iter([batch]))]
    build(types.SimpleNamespace(_distribute_strategy=mirrored), iterator)
    [(iterator_seen, (x, y))] = received
    assert iterator_seen is None
    np.testing.assert_array_equal(x, images[:2])
    np.testing.assert_array_equal(y, [0, 1])


def test_missing_internals_make_the_patch_a_noop(unpatched, monkeypatch):
    monkeypatch.delattr(keras_trainer, "_collective_all_reduce_multi_worker")
    with pytest.warns(RuntimeWarning, match="_collective_all_reduce"):
        assert not distribute_compat.patch_keras_for_multi_worker()
    assert keras_trainer.reduce_per_replica is unpatched["reduce_per_replica"]
    assert not distribute_compat.is_patched()


def test_changed_signature_makes_the_patch_a_noop(unpatched, monkeypatch):
    def reduce_per_replica(values, strategy):  # a hypothetical new API
        return values

    monkeypatch.setattr(keras_trainer, "reduce_per_replica", reduce_per_replica)
    with pytest.warns(RuntimeWarning, match="reduce_per_replica"):
        assert not distribute_compat.patch_keras_for_multi_worker()
    assert keras_trainer.reduce_per_replica is reduce_per_replica


def test_other_keras_version_warns_but_patches(unpatched, monkeypatch):
    monkeypatch.setattr(keras, "__version__", "3.99.0")
    with pytest.warns(RuntimeWarning, match="targets Keras 3.15"):
        assert distribute_compat.patch_keras_for_multi_worker()
    assert distribute_compat.is_patched()
