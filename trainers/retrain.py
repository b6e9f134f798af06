"""The retraining job: `run_retrain(config, genotype, model_dir)`.

Trains the child network of a genotype from scratch (SNAS §3.2-3.3) and
writes into `model_dir`: `config.yaml` (first), `genotype.json`, `logs/`
(TensorBoard), `checkpoints/` (the newest checkpoint, every epoch and every
`runtime.checkpoint_steps` steps: run the same command again after a crash
to resume), `history.json` (per-epoch metrics), `plots/` and `model.keras`:
the inference network (no auxiliary head, no drop-path) that `snas export`
ships. Every file is written under a temporary name and renamed.

Under MultiWorkerMirroredStrategy the chief writes into `model_dir` and
worker `i` into `model_dir/workers/<i>`, so workers sharing a file system
never write the same file.
"""

import json
import os

import keras

from snas_tf import dir_lock
from snas_tf.atomic_files import replace_atomic, write_atomic
from snas_tf.callbacks import DropPathScheduler
from snas_tf.checkpointing import (
    check_resume_config,
    fit_resumable,
    restore,
)
from snas_tf.config import RetrainConfig, save_config
from snas_tf.data import retrain_data
from snas_tf.genotype import get_genotype
from snas_tf.models import (
    build_child_network,
    copy_weights_by_name,
    count_parameters,
    multiply_adds,
)
from snas_tf.models.child_trainer import ChildTrainer
from snas_tf.optimizers import FusedSGD
from snas_tf.runtime import job_runtime
from snas_tf.strategy import make_strategy, worker_dir
from snas_tf.training import mixed_precision
from snas_tf.training import num_replicas as strategy_replicas

LR_SCHEDULES = ("cosine", "exponential")


def learning_rate_schedule(train, steps_per_epoch: int):
    """The retraining's learning rate per step.

    `cosine`: from `learning_rate` to `learning_rate_min` over all steps
    (CIFAR, the reference's CosineAnnealingLR). `exponential`: x `lr_decay`
    after every epoch (ImageNet, the reference's StepLR(1, 0.97)).
    """
    if train.lr_schedule == "cosine":
        if not 0 <= train.learning_rate_min <= train.learning_rate:
            raise ValueError(
                f"train.learning_rate_min {train.learning_rate_min!r} must "
                f"be in [0, learning_rate={train.learning_rate!r}]."
            )
        return keras.optimizers.schedules.CosineDecay(
            train.learning_rate,
            decay_steps=train.epochs * steps_per_epoch,
            alpha=train.learning_rate_min / train.learning_rate,
        )
    if train.lr_schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            train.learning_rate,
            decay_steps=steps_per_epoch,
            decay_rate=train.lr_decay,
            staircase=True,
        )
    raise ValueError(
        f"Unknown train.lr_schedule {train.lr_schedule!r}. Valid choices: "
        f"{LR_SCHEDULES}."
    )


def build_trainer(config: RetrainConfig, genotype, num_classes, steps):
    """The compiled `ChildTrainer`; call inside the strategy scope.

    The network is built with the auxiliary head and drop-path (when
    `drop_path_prob` > 0), in bfloat16 when `mixed_precision` is on, with
    synchronized BatchNorm under several replicas when `sync_batch_norm`.
    """
    t = config.train
    with mixed_precision(t.mixed_precision):
        network = build_child_network(
            genotype,
            auxiliary=config.child.auxiliary,
            drop_path=t.drop_path_prob > 0,
            **config.child_kwargs(num_classes),
        )
    if t.sync_batch_norm and strategy_replicas() > 1:
        # Read at call time by Keras' BatchNormalization: the step (traced
        # later, by fit) uses the global batch's moments.
        for layer in network.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
    trainer = ChildTrainer(
        network,
        num_classes,
        auxiliary_weight=t.auxiliary_weight,
        label_smoothing=t.label_smoothing,
    )
    optimizer = FusedSGD(learning_rate_schedule(t, steps), momentum=t.momentum)
    trainer.compile(
        optimizer=optimizer,
        weight_decay=t.weight_decay,
        clipnorm=t.clipnorm,
        jit_compile=config.runtime.jit_compile,
    )
    return trainer


def inference_network(config, genotype, trainer):
    """The float32 inference network (no auxiliary head, no drop-path)
    with the trained weights, copied by layer name."""
    model = build_child_network(
        genotype,
        auxiliary=False,
        **config.child_kwargs(trainer.num_classes),
    )
    copy_weights_by_name(trainer.network, model)
    return model


def _check_same_genotype(out, genotype):
    path = os.path.join(out, "genotype.json")
    if os.path.exists(path) and get_genotype(path) != genotype:
        raise ValueError(
            f"{out} holds a run of genotype {get_genotype(path).to_string()!r}"
            f", not {genotype.to_string()!r}; use another --model-dir."
        )


def run_retrain(config: RetrainConfig, genotype=None, model_dir=".") -> dict:
    """Retrains the child network of `genotype` and writes its outputs.

    Args:
        config: the resolved `RetrainConfig`.
        genotype: a `Genotype`, name, JSON, compact string or genotype.json
            path; None uses `config.child.genotype`.
        model_dir: output directory (created if needed). Running again with
            the same directory and config resumes from `checkpoints/`.

    Returns:
        A summary dict: final validation top-1 / top-5, parameters (no
        auxiliary head), multiply-adds and the output paths.

    Raises:
        ValueError: for an unknown genotype, network, data set, schedule or
            bad sizes, or a directory written by another live process
            (`snas_tf.dir_lock`); raised before anything is written.
    """
    with job_runtime(config.runtime, search=False):
        return _retrain(config, genotype, model_dir)


def _retrain(config: RetrainConfig, genotype, model_dir) -> dict:
    genotype = get_genotype(genotype or config.child.genotype)
    strategy = make_strategy(config.runtime.strategy)
    t, seed = config.train, config.runtime.seed
    data = retrain_data(config.data, t.batch_size, seed, t.epochs)
    out = worker_dir(strategy, model_dir)
    # One writer per directory; each worker has its own.
    with dir_lock.hold(out, "model_dir"):
        return _retrain_locked(config, genotype, strategy, data, out)


def _retrain_locked(config, genotype, strategy, data, out) -> dict:
    t, seed = config.train, config.runtime.seed
    checkpoints = os.path.join(out, "checkpoints")
    if check_resume_config(out, config):
        _check_same_genotype(out, genotype)
    with strategy.scope():
        trainer = build_trainer(
            config, genotype, data.num_classes, data.steps_per_epoch
        )
        # A corrupt checkpoint fails here, before anything is written.
        state = restore(trainer, checkpoints)
    # Everything is validated: now write.
    os.makedirs(out, exist_ok=True)
    save_config(config, os.path.join(out, "config.yaml"))
    write_atomic(
        os.path.join(out, "genotype.json"), genotype.to_json(indent=2) + "\n"
    )
    callbacks = [keras.callbacks.TensorBoard(os.path.join(out, "logs"))]
    if t.drop_path_prob > 0:
        callbacks.insert(0, DropPathScheduler(t.drop_path_prob, t.epochs))
    checkpoint = fit_resumable(
        trainer,
        lambda epoch, step, stop: (
            retrain_data(
                config.data, t.batch_size, seed, stop, (epoch, step)
            ).train
        ),
        data.validation,
        t.epochs,
        data.steps_per_epoch,
        callbacks,
        checkpoints,
        every_steps=config.runtime.checkpoint_steps,
        state=state,
        verbose=config.runtime.verbose,
    )
    model = inference_network(config, genotype, trainer)
    model_path = os.path.join(out, "model.keras")
    replace_atomic(model_path, model.save)
    epochs = checkpoint.epochs
    write_atomic(
        os.path.join(out, "history.json"),
        json.dumps({"epochs": epochs}, indent=2) + "\n",
    )
    from snas_tf.trainers.plot import run_plot

    run_plot(out)
    last = epochs[-1] if epochs else {}
    return {
        "genotype": genotype.to_string(),
        "val_accuracy": last.get("val_accuracy"),
        "val_top5_accuracy": last.get("val_top5_accuracy"),
        "parameters": count_parameters(model),
        "multiply_adds": multiply_adds(model),
        "model_dir": str(out),
        "model_path": model_path,
    }


__all__ = ["build_trainer", "learning_rate_schedule", "run_retrain"]
