"""Tests of the batched pipelines (snas_tf.data.pipelines): counts,
shapes, the data order (seeded, resumable, replayed) and tf.data options.
"""

import numpy as np
import pytest
import tensorflow as tf
from pipeline_testing import epoch_arrays

from snas_tf import data
from snas_tf.config import DataConfig

DIGITS = DataConfig(dataset="digits", image_size=8)
NUM_DIGITS = 1797
AUTO = tf.data.experimental.AutoShardPolicy.AUTO
DATA = tf.data.experimental.AutoShardPolicy.DATA


# --- digits: shapes and counts ----------------------------------------------


def test_digits_search_batches_and_counts():
    p = data.search_data(DIGITS, 64, seed=0)
    assert p.train_examples + p.validation_examples == NUM_DIGITS
    assert p.validation_examples / NUM_DIGITS == pytest.approx(0.1, abs=0.01)
    assert p.steps_per_epoch == p.train_examples // 64
    assert (p.num_classes, p.input_shape) == (10, (8, 8, 3))
    x, y = epoch_arrays(p.train)
    assert len(y) == p.steps_per_epoch * 64
    assert x.shape[1:] == (8, 8, 3) and x.dtype == np.float32
    assert y.dtype == np.int32 and set(y) <= set(range(10))
    vx, vy = epoch_arrays(p.validation)
    assert vx.shape == (p.validation_examples, 8, 8, 3)
    assert vy.dtype == np.int32


def test_digits_max_examples_caps_train_plus_validation():
    cfg = DataConfig(
        dataset="digits", image_size=8, max_examples=300, augment="none"
    )
    p = data.search_data(cfg, 16, seed=3)
    assert p.train_examples + p.validation_examples == 300
    assert p.steps_per_epoch == p.train_examples // 16
    assert len(list(p.train)) == p.steps_per_epoch
    assert sum(len(y) for _, y in p.validation) == p.validation_examples


# --- determinism ------------------------------------------------------------


def _small_digits(**overrides):
    kwargs = dict(dataset="digits", image_size=8, max_examples=120, cutout=4)
    kwargs.update(overrides)
    return DataConfig(**kwargs)


def test_same_seed_same_first_epoch_other_seed_differs():
    x1, y1 = epoch_arrays(data.search_data(_small_digits(), 16, seed=1).train)
    x2, y2 = epoch_arrays(data.search_data(_small_digits(), 16, seed=1).train)
    x3, _ = epoch_arrays(data.search_data(_small_digits(), 16, seed=2).train)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert x1.shape != x3.shape or not np.array_equal(x1, x3)


def test_epochs_reshuffle_and_replay():
    # No augmentation, so epochs can differ only in order; batches of one
    # drop nothing, so every epoch holds every training example.
    cfg = _small_digits(augment="none", cutout=0)
    p = data.search_data(cfg, 1, seed=0, epochs=2)
    steps = p.steps_per_epoch
    assert steps == p.train_examples
    x, _ = epoch_arrays(p.train)
    assert len(x) == 2 * steps
    first, second = x[:steps], x[steps:]
    assert not np.array_equal(first, second)
    assert sorted(im.tobytes() for im in first) == sorted(
        im.tobytes() for im in second
    )
    # Iterating again (a distributed copy, a second fit) replays the data.
    np.testing.assert_array_equal(epoch_arrays(p.train)[0], x)


def test_resumed_pipeline_continues_the_data_order():
    cfg = _small_digits()
    whole = epoch_arrays(data.make_pipelines(cfg, 16, seed=4, epochs=2).train)
    p = data.make_pipelines(cfg, 16, seed=4, epochs=2, initial_epoch=1)
    rest = epoch_arrays(p.train)
    assert len(rest[1]) == p.steps_per_epoch * 16
    np.testing.assert_array_equal(rest[0], whole[0][len(rest[0]) :])
    np.testing.assert_array_equal(rest[1], whole[1][len(rest[1]) :])


def test_data_order_ignores_the_global_seed():
    try:
        tf.random.set_seed(0)
        x1, _ = epoch_arrays(
            data.search_data(_small_digits(), 16, seed=1).train
        )
        tf.random.set_seed(123)
        x2, _ = epoch_arrays(
            data.search_data(_small_digits(), 16, seed=1).train
        )
    finally:
        tf.random.set_seed(None)
    x3, _ = epoch_arrays(data.search_data(_small_digits(), 16, seed=1).train)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(x1, x3)


@pytest.mark.parametrize("initial_epoch", [-1, 2])
def test_initial_epoch_out_of_range(initial_epoch):
    with pytest.raises(ValueError, match=f"initial_epoch {initial_epoch}"):
        data.make_pipelines(
            _small_digits(), 16, epochs=2, initial_epoch=initial_epoch
        )


# --- tf.data options --------------------------------------------------------


def test_carved_pipelines_shard_by_data_others_auto():
    carved = data.search_data(_small_digits(), 16)
    held_out = data.search_data(_small_digits(eval_split="train"), 16)
    for ds in (carved.train, carved.validation):
        assert ds.options().experimental_distribute.auto_shard_policy == DATA
        assert ds.options().deterministic
    for ds in (held_out.train, held_out.validation):
        assert ds.options().experimental_distribute.auto_shard_policy == AUTO


# --- bad input --------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, batch, message",
    [
        (dict(augment="fancy"), 8, "'fancy'"),
        (dict(max_examples=20), 64, "Batch size 64"),
        (dict(validation_fraction=0.0), 8, r"got 0\.0"),
        (dict(validation_fraction=1.5), 8, r"got 1\.5"),
        (dict(eval_split="test"), 8, "'test' for 'digits'"),
        ({}, 0, "got 0"),
    ],
)
def test_bad_digits_input(overrides, batch, message):
    cfg = DataConfig(dataset="digits", image_size=8, **overrides)
    with pytest.raises(ValueError, match=message):
        data.search_data(cfg, batch)


# --- the paired batches of bi-level DARTS -----------------------------------


@pytest.fixture
def indexed_digits(monkeypatch):
    """`_load` gives 120 examples whose label is their index."""
    from snas_tf.data import pipelines
    from snas_tf.data.sources import _Source

    def load(cfg, split, seed):
        ds = tf.data.Dataset.range(120).map(
            lambda i: (tf.fill([8, 8, 1], tf.cast(i, tf.uint8)), i)
        )
        return _Source(ds, 120, 120, (8, 8, 1))

    monkeypatch.setattr(pipelines, "_load", load)
    return _small_digits(augment="none", cutout=0)


def _pairs(ds):
    """Train and arch labels (here: indices) of a paired pipeline."""
    train, arch = [], []
    for (x_train, x_arch), (y_train, y_arch) in ds:
        assert x_train.shape == x_arch.shape
        train += y_train.numpy().tolist()
        arch += y_arch.numpy().tolist()
    return train, arch


def test_paired_batches_come_from_disjoint_splits(indexed_digits):
    p = data.search_data(indexed_digits, 4, seed=0, epochs=2, arch_fraction=0.5)
    snas = data.search_data(indexed_digits, 4, seed=0)
    assert p.train_examples + p.arch_examples + p.validation_examples == 120
    assert p.validation_examples == snas.validation_examples
    assert p.steps_per_epoch == min(p.train_examples, p.arch_examples) // 4
    train, arch = _pairs(p.train)
    assert len(train) == len(arch) == 2 * p.steps_per_epoch * 4
    _, val = epoch_arrays(p.validation)
    _, snas_val = epoch_arrays(snas.validation)
    assert set(val) == set(snas_val)
    assert not set(train) & set(arch)
    assert not (set(train) | set(arch)) & set(val)
    # Each epoch holds distinct examples; the two orders differ.
    steps = p.steps_per_epoch * 4
    assert len(set(arch[:steps])) == steps
    assert train[:steps] != train[steps:]
    assert p.train.options().experimental_distribute.auto_shard_policy == DATA


def test_paired_pipeline_resumes_its_order(indexed_digits):
    whole = _pairs(data.search_data(indexed_digits, 4, 7, 2, (0, 0), 0.5).train)
    rest = _pairs(data.search_data(indexed_digits, 4, 7, 2, (0, 3), 0.5).train)
    assert rest[0] == whole[0][12:] and rest[1] == whole[1][12:]
