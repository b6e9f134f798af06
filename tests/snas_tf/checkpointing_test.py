"""Exact resume, the NaN guard and crash-safe writes of `checkpointing`, on
a tiny model in-process (the SIGKILL tests of the real jobs are in
tests/trainers/resume_test.py)."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from snas_tf import checkpointing
from snas_tf.checkpointing import (
    STATE_FILE,
    ResumableCheckpoint,
    check_resume_config,
    fit_resumable,
    load_state,
    restore,
    restore_weights,
)
from snas_tf.config import load_config, save_config

EPOCHS, STEPS, BATCH = 2, 5, 4
EVERY = 2  # mid-epoch checkpoints after steps 2 and 4


class Interrupted(Exception):
    """Stands for a crash: raised by `InterruptAt` mid-epoch."""


class InterruptAt(keras.callbacks.Callback):
    """Raises after the `at`-th train step of this fit (1-based), before
    the checkpoint callback sees that step (as a SIGKILL would)."""

    def __init__(self, at):
        super().__init__()
        self.at, self.steps = at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps == self.at:
            raise Interrupted(self.steps)


def build_model():
    """Input(4) -> Dense -> seeded Dropout -> Dense, SGD with momentum;
    the same initial weights every time."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, activation="tanh")(inputs)
    x = keras.layers.Dropout(0.5, seed=1)(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def batch(epoch, step, nan_at=None):
    """Batch `step` of `epoch`: a pure function of the two."""
    rng = np.random.default_rng([epoch, step])
    x = rng.normal(size=(BATCH, 4)).astype("float32")
    if (epoch, step) == nan_at:
        x[:] = np.nan
    return x, rng.integers(0, 3, BATCH)


def data_from(nan_at=None):
    """`make_train(epoch, step, stop)` for `fit_resumable`."""

    def make_train(epoch, step, stop):
        pairs = [
            batch(e, s, nan_at)
            for e in range(epoch, stop)
            for s in range(step if e == epoch else 0, STEPS)
        ]
        xs, ys = zip(*pairs, strict=True)
        return tf.data.Dataset.from_tensor_slices((np.stack(xs), np.stack(ys)))

    return make_train


def fit(model, directory, callbacks=(), nan_at=None, epochs=EPOCHS):
    return fit_resumable(
        model,
        data_from(nan_at),
        None,
        epochs,
        STEPS,
        list(callbacks),
        directory,
        every_steps=EVERY,
        state=restore(model, directory),
        verbose=0,
    )


def state_of(model):
    """Everything a resumed run must reproduce."""
    return {
        "weights": model.get_weights(),
        "optimizer": [np.array(v) for v in model.optimizer.variables],
        "iterations": int(model.optimizer.iterations.numpy()),
        "seeds": [np.array(v) for v in checkpointing._seed_states(model)],
    }


def assert_same_state(got, expected):
    assert got["iterations"] == expected["iterations"]
    for key in ("weights", "optimizer", "seeds"):
        assert len(got[key]) == len(expected[key]), key
        for a, b in zip(got[key], expected[key], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=key)


def interrupt(directory, at):
    with pytest.raises(Interrupted):
        fit(build_model(), directory, [InterruptAt(at)])


def files(directory):
    return {
        name: (directory / name).read_bytes()
        for name in sorted(os.listdir(directory))
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The state after an uninterrupted run."""
    model = build_model()
    fit(model, tmp_path_factory.mktemp("reference"))
    return state_of(model)


def test_the_dropout_seed_generator_is_tracked_and_advances(reference):
    seeds = checkpointing._seed_states(build_model())
    assert len(seeds) == 1  # the Dropout's
    # One draw per step: a resume must restore it, not restart it.
    assert not np.array_equal(reference["seeds"][0], np.array(seeds[0]))
    assert reference["iterations"] == EPOCHS * STEPS


def test_interrupted_then_resumed_equals_an_uninterrupted_run(
    reference, tmp_path
):
    interrupt(tmp_path, at=STEPS + 3)  # step 3 of epoch 1
    state = load_state(tmp_path)
    assert (state["epoch"], state["step"]) == (1, EVERY)
    assert state["iterations"] == STEPS + EVERY
    model = build_model()
    fit(model, tmp_path)
    assert_same_state(state_of(model), reference)


def test_a_resume_without_the_seed_states_would_differ(reference, tmp_path):
    """The control of the test above: with the saved seed states replaced
    by a fresh model's, the same resume ends with other weights."""
    interrupt(tmp_path, at=3)
    path = tmp_path / STATE_FILE
    state = json.loads(path.read_text())
    fresh = checkpointing._seed_states(build_model())
    assert state["seed_states"] != [np.array(v).tolist() for v in fresh]
    state["seed_states"] = [np.array(v).tolist() for v in fresh]
    path.write_text(json.dumps(state))
    model = build_model()
    fit(model, tmp_path)
    got = state_of(model)
    assert got["iterations"] == reference["iterations"]
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(got["weights"], reference["weights"], strict=True)
    )


def test_a_non_finite_loss_stops_at_its_step_keeping_the_last_good_one(
    tmp_path,
):
    # Batch index 3 of epoch 1 is NaN: its step is the 4th of the epoch.
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 4\b"):
        fit(build_model(), tmp_path, nan_at=(1, 3))
    state = load_state(tmp_path)
    # The last checkpoint before it: after step 2 (every 2 steps); the
    # NaN step itself is never saved.
    assert (state["epoch"], state["step"]) == (1, 2)
    assert state["iterations"] == STEPS + 2
    weights = [n for n in os.listdir(tmp_path) if n != STATE_FILE]
    assert weights == [state["weights"]]
    model = build_model()
    restore_weights(model, state, tmp_path)
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_a_failed_weights_write_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch
):
    model = build_model()
    fit(model, tmp_path, epochs=1)
    before = files(tmp_path)
    assert sorted(before) == [json.loads(before[STATE_FILE])["weights"]] + [
        STATE_FILE
    ]

    def fail_halfway(self, path):
        with open(path, "wb") as f:
            f.write(b"\x89HDF\r\n")  # the start of a weights file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ResumableCheckpoint, "_write_weights", fail_halfway)
    with pytest.raises(OSError, match="No space left"):
        fit(model, tmp_path, epochs=2)
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]
    assert files(tmp_path) == before


def test_load_state_without_a_checkpoint_is_none(tmp_path):
    assert load_state(tmp_path) is None
    assert load_state(tmp_path / "missing") is None


@pytest.fixture
def checkpoint(tmp_path):
    """A checkpoint directory after one epoch."""
    fit(build_model(), tmp_path, epochs=1)
    return tmp_path


def test_a_corrupt_state_file_is_named(checkpoint):
    (checkpoint / STATE_FILE).write_text('{"epoch": 1, "st')
    path = str(checkpoint / STATE_FILE)
    with pytest.raises(ValueError, match="Corrupt checkpoint state") as e:
        load_state(checkpoint)
    assert path in str(e.value) and "start over" in str(e.value)


def test_a_state_file_without_a_key_is_corrupt(checkpoint):
    state = json.loads((checkpoint / STATE_FILE).read_text())
    del state["seed_states"]
    (checkpoint / STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(ValueError, match="KeyError: 'seed_states'"):
        load_state(checkpoint)


def test_a_missing_weights_file_is_named(checkpoint):
    name = load_state(checkpoint)["weights"]
    os.remove(checkpoint / name)
    with pytest.raises(ValueError, match=f"names '{name}', which is missing"):
        load_state(checkpoint)


def test_a_garbage_weights_file_is_named(checkpoint):
    state = load_state(checkpoint)
    with open(state["weights_path"], "wb") as f:
        f.write(b"garbage, not HDF5")
    model = build_model()
    with pytest.raises(ValueError, match="Corrupt checkpoint weights") as e:
        restore_weights(model, state, checkpoint)
    assert state["weights_path"] in str(e.value)


SMALL = ["search.epochs=2", "runtime.verbose=0"]


def test_resume_config_names_a_changed_key(tmp_path):
    save_config(load_config([], SMALL), tmp_path / "config.yaml")
    changed = load_config([], [*SMALL, "search.epochs=3"])
    with pytest.raises(ValueError, match=r"search\.epochs: 2 -> 3"):
        check_resume_config(tmp_path, changed)


def test_resume_config_allows_runtime_only_changes(tmp_path):
    save_config(load_config([], SMALL), tmp_path / "config.yaml")
    louder = load_config([], [*SMALL, "runtime.verbose=2"])
    assert check_resume_config(tmp_path, louder) is True


def test_resume_config_without_a_config_is_a_fresh_run(tmp_path):
    assert check_resume_config(tmp_path, load_config([], SMALL)) is False
