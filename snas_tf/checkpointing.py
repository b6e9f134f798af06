"""Exact, crash-safe resume of a Keras `fit` (the search and the retrain).

`ResumableCheckpoint` saves every `every_steps` train steps and at the end
of every epoch. A checkpoint is one weights file (the model's weights, both
optimizers' slots and step counters, the temperature, the Gumbel sampler's
and drop-path's seed-generator state: everything Keras tracks) plus
`state.json` naming it, with the epoch and step reached and the per-epoch
records so far. Each file is written under a temporary name and renamed,
weights first; `state.json` is replaced last, so a kill at any moment leaves
the previous good checkpoint in force.

`fit_resumable` restores the newest checkpoint and continues the data where
it stopped: the data order and augmentation are stateless functions of
(seed, epoch, position) (`snas_tf.data`), so skipping the steps already
taken gives the batches an uninterrupted run would have seen next. A resume
in mid-epoch runs the rest of that epoch as a fit of its own; that epoch's
logged training metrics then average over the resumed steps only (the
weights are unaffected). With `runtime.deterministic`, a resumed run ends
with the same weights as an uninterrupted one (tested bit for bit).

Keras' `BackupAndRestore` is not used: it restarts an interrupted epoch
from its first step with the data position lost, and writes in place.
"""

import json
import math
import numbers
import os

import keras
import numpy as np

from snas_tf.atomic_files import replace_atomic, write_atomic
from snas_tf.config import config_to_dict, load_config

STATE_FILE = "state.json"
_WEIGHTS_PREFIX = "ckpt-"
_WEIGHTS_SUFFIX = ".weights.h5"


def _seed_states(model):
    """The states of the model's `SeedGenerator`s (the Gumbel sampler's,
    drop-path's), which Keras leaves out of weights files."""
    return [v for v in model.variables if v.name == "seed_generator_state"]


def _numbers(logs):
    return {
        k: float(v)
        for k, v in (logs or {}).items()
        if isinstance(v, numbers.Real) or hasattr(v, "__float__")
    }


class _StepPosition(keras.callbacks.Callback):
    """Knows the epoch and the step within it (counted from the epoch's
    start, also when a resumed fit starts mid-epoch: see `start`)."""

    def __init__(self):
        super().__init__()
        self._epoch = 0
        self._step_offset = 0  # steps of the epoch done before this fit

    def start(self, epoch, step):
        """Tells the callback where the next fit starts."""
        self._epoch, self._step_offset = epoch, step

    def step(self, batch) -> int:
        """The step of the epoch that batch `batch` of this fit ends."""
        return self._step_offset + batch + 1

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self._step_offset = 0


class ResumableCheckpoint(_StepPosition):
    """Saves the whole training state atomically, every N steps and epoch.

    Args:
        directory: checkpoint directory (created on the first save).
        every_steps: also save after every this many train steps within an
            epoch (0 or None: at epoch ends only).
        records: an optional list (e.g. `SearchMonitor.records`) saved with
            each checkpoint and restored on resume.

    Attributes:
        epochs: per-epoch numeric logs, `{"epoch": e, **logs}`, including
            those restored from an earlier run.
    """

    def __init__(self, directory, every_steps=None, records=None):
        super().__init__()
        if every_steps is not None and (
            isinstance(every_steps, bool)
            or not isinstance(every_steps, numbers.Integral)
            or every_steps < 0
        ):
            raise ValueError(
                f"every_steps must be an int >= 0, got {every_steps!r}."
            )
        self.directory = os.fspath(directory)
        self.every_steps = int(every_steps or 0)
        self.records = records if records is not None else []
        self.epochs = []

    def restore(self, state):
        """Takes over the epoch logs and records of a loaded `state`."""
        self.epochs[:] = state["epochs"]
        self.records[:] = state["records"]

    def on_train_batch_end(self, batch, logs=None):
        step = self.step(batch)
        if self.every_steps and step % self.every_steps == 0:
            steps = self.params.get("steps") or 0
            if batch + 1 < steps:  # the epoch end saves the last one
                self.save(self._epoch, step)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self.epochs.append({"epoch": epoch, **_numbers(logs)})
        self.save(epoch + 1, 0)

    def save(self, epoch, step):
        """Writes a checkpoint of the state after `step` steps of `epoch`."""
        os.makedirs(self.directory, exist_ok=True)
        iterations = int(self.model.optimizer.iterations.numpy())
        name = f"{_WEIGHTS_PREFIX}{iterations:08d}-{epoch}-{step}"
        weights = os.path.join(self.directory, name + _WEIGHTS_SUFFIX)
        replace_atomic(weights, self._write_weights)
        state = {
            "epoch": epoch,
            "step": step,
            "iterations": iterations,
            "weights": os.path.basename(weights),
            "seed_states": [
                keras.ops.convert_to_numpy(v).tolist()
                for v in _seed_states(self.model)
            ],
            "epochs": self.epochs,
            "records": self.records,
        }
        write_atomic(
            os.path.join(self.directory, STATE_FILE),
            json.dumps(state, indent=1, default=float) + "\n",
        )
        for old in os.listdir(self.directory):
            if old.startswith(_WEIGHTS_PREFIX) and old != state["weights"]:
                os.remove(os.path.join(self.directory, old))

    def _write_weights(self, path):
        self.model.save_weights(path)


def load_state(directory):
    """The checkpoint state in `directory`, or None if there is none.

    Raises:
        ValueError: if `state.json` or the weights it names is unreadable,
            naming the file and how to start over.
    """
    path = os.path.join(os.fspath(directory), STATE_FILE)
    if not os.path.exists(path):
        return None
    hint = f"delete {directory} to start over, or use another --model-dir"
    try:
        with open(path) as f:
            state = json.load(f)
        for key in (
            "epoch",
            "step",
            "weights",
            "seed_states",
            "epochs",
            "records",
        ):
            state[key]  # noqa: B018 (presence check)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"Corrupt checkpoint state {path}: {e.__class__.__name__}: {e}; "
            f"{hint}."
        ) from None
    weights = os.path.join(os.fspath(directory), state["weights"])
    if not os.path.exists(weights):
        raise ValueError(
            f"Checkpoint {path} names {state['weights']!r}, which is "
            f"missing; {hint}."
        )
    state["weights_path"] = weights
    return state


# Runtime settings a resumed run may change (they do not change results).
_RESUME_FREE = ("verbose", "intra_op_threads", "inter_op_threads", "strategy")


def check_resume_config(model_dir, config) -> bool:
    """Refuses to resume a run in `model_dir` under another config.

    Returns:
        True if `model_dir` holds a run of the same config (resume), False
        if it holds none.

    Raises:
        ValueError: naming the keys that differ, or the unreadable
            config.yaml.
    """
    path = os.path.join(os.fspath(model_dir), "config.yaml")
    if not os.path.exists(path):
        return False
    try:
        saved = load_config([path], config_class=type(config))
    except ValueError as e:
        raise ValueError(
            f"{model_dir} holds an unreadable config.yaml ({e}); use "
            "another --model-dir."
        ) from None
    old, new = config_to_dict(saved), config_to_dict(config)
    for key in _RESUME_FREE:
        old["runtime"].pop(key), new["runtime"].pop(key)
    changed = [
        f"{section}.{key}: {old[section][key]!r} -> {new[section][key]!r}"
        for section in new
        for key in new[section]
        if old[section].get(key) != new[section][key]
    ]
    if changed:
        raise ValueError(
            f"{model_dir} holds a run with another config ("
            + "; ".join(changed)
            + "); run with the same config to resume it, or use another "
            "--model-dir."
        )
    return True


def restore_weights(model, state, directory):
    """Loads a checkpoint's weights (and optimizer slots) into `model`."""
    optimizer = model.optimizer
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    hint = f"delete {directory} to start over, or use another --model-dir"
    try:
        model.load_weights(state["weights_path"])
    except Exception as e:  # h5py raises OSError, Keras ValueError
        raise ValueError(
            f"Corrupt checkpoint weights {state['weights_path']}: "
            f"{e.__class__.__name__}: {str(e).splitlines()[0]}; {hint}."
        ) from None
    seeds = _seed_states(model)
    if len(seeds) != len(state["seed_states"]):
        raise ValueError(
            f"Checkpoint in {directory} holds {len(state['seed_states'])} "
            f"random-seed states, the model has {len(seeds)}; {hint}."
        )
    for variable, value in zip(seeds, state["seed_states"], strict=True):
        variable.assign(np.asarray(value, dtype=variable.dtype))


class NaNGuard(_StepPosition):
    """Stops training at the first non-finite loss, naming the step.

    Put it before the checkpoint callback: the failing step is never saved,
    so the last good checkpoint stays in force.
    """

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise FloatingPointError(
                f"Non-finite loss ({float(loss)}) at epoch {self._epoch}, "
                f"step {self.step(batch)}; training stopped, "
                "the last good checkpoint is kept. Lower the learning rate "
                "or clipnorm and run the same command to resume."
            )


def restore(model, directory):
    """Loads the newest checkpoint in `directory` into `model`.

    Returns:
        The checkpoint state (for `fit_resumable`), or None if there is no
        checkpoint.

    Raises:
        ValueError: for a corrupt checkpoint (before `fit`, so a job can
            check it before writing anything).
    """
    state = load_state(directory)
    if state is not None:
        restore_weights(model, state, directory)
    return state


def fit_resumable(
    model,
    make_train,
    validation,
    epochs,
    steps_per_epoch,
    callbacks,
    directory,
    every_steps=None,
    state=None,
    records=None,
    verbose=1,
):
    """`model.fit` over `epochs`, checkpointing into `directory`, going on
    from a restored `state`.

    Args:
        model: a compiled, built model.
        make_train: `make_train(epoch, step, stop_epoch)` -> the training
            data from `step` of `epoch` up to `stop_epoch`.
        validation: the validation data.
        epochs, steps_per_epoch: the whole run's epochs and steps.
        callbacks: the job's other callbacks (epoch-indexed ones work
            unchanged: `fit` gets `initial_epoch`).
        directory: checkpoint directory.
        every_steps: mid-epoch checkpoint interval in steps (None: epochs
            only).
        state: what `restore(model, directory)` returned: the run goes on
            from there (None: from the start).
        records: a list saved and restored with the checkpoints.

    Returns:
        The `ResumableCheckpoint`, whose `epochs` hold every epoch's logs.
    """
    checkpoint = ResumableCheckpoint(directory, every_steps, records)
    guard = NaNGuard()
    epoch, step = 0, 0
    if state is not None:
        checkpoint.restore(state)
        epoch, step = state["epoch"], state["step"]
        if verbose:
            print(f"Resuming from {directory}: epoch {epoch}, step {step}.")
    all_callbacks = [guard, *callbacks, checkpoint]
    while epoch < epochs:
        # A mid-epoch resume finishes that epoch first, in a fit of its own.
        stop = epoch + 1 if step else epochs
        guard.start(epoch, step)
        checkpoint.start(epoch, step)
        model.fit(
            make_train(epoch, step, stop),
            validation_data=validation,
            initial_epoch=epoch,
            epochs=stop,
            steps_per_epoch=steps_per_epoch - step,
            callbacks=all_callbacks,
            verbose=verbose,
            shuffle=False,  # the pipeline shuffles
        )
        epoch, step = stop, 0
    return checkpoint
