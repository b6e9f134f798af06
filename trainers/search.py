"""The SNAS search job: `run_search(config, model_dir)`.

Writes into `model_dir`: `config.yaml` (first), `logs/` (TensorBoard),
`checkpoints/` (the newest checkpoint: every epoch and every
`runtime.checkpoint_steps` steps; run the same command again to resume),
`history.json` (per-epoch metrics, genotypes and softmax(α)),
`genotype.json` (the final derived architecture) and `plots/` (cells, α
heatmaps, curves; `snas plot`). Every file is written
under a temporary name and renamed.
"""

import contextlib
import json
import os
import sys

import keras

from snas_tf import dir_lock
from snas_tf.atomic_files import write_atomic
from snas_tf.callbacks import SearchMonitor, TemperatureScheduler
from snas_tf.checkpointing import (
    check_resume_config,
    fit_resumable,
    restore,
)
from snas_tf.collapse import holds_weights
from snas_tf.config import Config, save_config
from snas_tf.data import search_data
from snas_tf.genotype import derive_genotype
from snas_tf.latency.cost import search_latency_costs
from snas_tf.models import SNASSupernet, default_search_optimizers
from snas_tf.runtime import job_runtime
from snas_tf.strategy import is_chief, make_strategy
from snas_tf.training import mixed_precision


def build_supernet(config: Config, num_classes: int, steps_per_epoch: int):
    """The compiled supernet of `config`; call inside the strategy scope.

    With `search.mixed_precision` the layers compute in bfloat16 (the
    variables, α and the loss stay float32)."""
    m, s = config.model, config.search
    # A bad latency table fails here, before anything is written.
    latency_costs = search_latency_costs(config)
    with mixed_precision(s.mixed_precision):
        model = SNASSupernet(
            num_classes=num_classes,
            channels=m.channels,
            num_cells=m.num_cells,
            num_nodes=m.num_nodes,
            primitives=m.primitives,
            stem_multiplier=m.stem_multiplier,
            mode=s.mode,
            resource_estimator=s.resource_estimator,
            resource=s.resource,
            latency_costs=latency_costs,
            latency_target_ms=s.latency_target_ms,
            penalty_strength=s.resolved_penalty_strength,
            derivation_rule=s.resolved_derivation_rule,
            drop_path_prob=s.resolved_drop_path_prob,
            seed=config.runtime.seed,
            recompute=m.recompute,
            fast_kernels=config.runtime.fast_kernels,
        )
    optimizer, arch_optimizer = default_search_optimizers(
        s.epochs, steps_per_epoch, s
    )
    model.compile(
        optimizer=optimizer,
        arch_optimizer=arch_optimizer,
        weight_decay=s.weight_decay,
        arch_weight_decay=s.arch_weight_decay,
        clipnorm=s.clipnorm,
        arch_clipnorm=s.arch_clipnorm,
        jit_compile=config.runtime.jit_compile,
    )
    return model


def run_search(config: Config, model_dir, callbacks=()) -> dict:
    """Runs a search and writes its outputs into `model_dir`.

    Running it again with the same `model_dir` and config resumes an
    interrupted search from its newest checkpoint (`snas_tf.checkpointing`);
    a finished one is not retrained, its outputs are written again.

    Args:
        config: the resolved `Config`.
        model_dir: output directory (created if needed).
        callbacks: extra Keras callbacks for `fit`.

    Returns:
        A summary dict: final genotype (compact string), last epoch's logs
        and the output paths.

    Raises:
        ValueError: for a bad config or data set, or a `model_dir` holding
            another run or a corrupt checkpoint, or written by another
            live process (`snas_tf.dir_lock`); nothing is written then.
        FloatingPointError: at a non-finite loss (the last good checkpoint
            is kept).
    """
    with job_runtime(config.runtime, search=True):
        return _search(config, model_dir, callbacks)


def arch_fraction(search) -> float | None:
    """The architecture split of the search's data: `search.arch_fraction`
    in bi-level `darts` mode, else None (θ and α share the batches)."""
    return search.arch_fraction if search.mode == "darts" else None


def _search(config: Config, model_dir, callbacks) -> dict:
    strategy = make_strategy(config.runtime.strategy)
    # One writer per directory: the chief's lock (the other workers of a
    # multi-worker search share its model_dir).
    lock = (
        dir_lock.hold(model_dir, "model_dir")
        if is_chief(strategy)
        else contextlib.nullcontext()
    )
    with lock:
        return _search_locked(config, model_dir, callbacks, strategy)


def _search_locked(config: Config, model_dir, callbacks, strategy) -> dict:
    s, seed = config.search, config.runtime.seed
    split = arch_fraction(s)
    # Data first: a bad data set fails before anything is written.
    data = search_data(config.data, s.batch_size, seed, s.epochs, (0, 0), split)
    checkpoints = os.path.join(model_dir, "checkpoints")
    check_resume_config(model_dir, config)
    with strategy.scope():
        model = build_supernet(config, data.num_classes, data.steps_per_epoch)
        model.build((None,) + data.input_shape)
        # A corrupt checkpoint fails here, before anything is written.
        state = restore(model, checkpoints)
    os.makedirs(model_dir, exist_ok=True)
    save_config(config, os.path.join(model_dir, "config.yaml"))
    monitor = SearchMonitor(s.resolved_derivation_rule)
    job_callbacks = [
        TemperatureScheduler(
            s.epochs,
            s.temperature_initial,
            s.temperature_final,
            s.temperature_schedule,
        ),
        monitor,
        keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")),
        *callbacks,
    ]
    checkpoint = fit_resumable(
        model,
        lambda epoch, step, stop: (
            search_data(
                config.data, s.batch_size, seed, stop, (epoch, step), split
            ).train
        ),
        data.validation,
        s.epochs,
        data.steps_per_epoch,
        job_callbacks,
        checkpoints,
        every_steps=config.runtime.checkpoint_steps,
        state=state,
        records=monitor.records,
        verbose=config.runtime.verbose,
    )
    genotype = derive_genotype(
        keras.ops.convert_to_numpy(model.arch_logits_normal),
        keras.ops.convert_to_numpy(model.arch_logits_reduce),
        s.resolved_derivation_rule,
        model.search_space,
    )
    _warn_if_collapsed(genotype)
    genotype_path = os.path.join(model_dir, "genotype.json")
    write_atomic(genotype_path, genotype.to_json(indent=2) + "\n")
    records = {
        "primitives": list(model.search_space.primitives),
        "num_nodes": model.search_space.num_nodes,
        "epochs": monitor.records,
        "history": _columns(checkpoint.epochs),
    }
    write_atomic(
        os.path.join(model_dir, "history.json"),
        json.dumps(records, indent=2, default=float) + "\n",
    )
    from snas_tf.trainers.plot import run_plot

    run_plot(model_dir)
    return {
        "genotype": genotype.to_string(),
        "last_epoch": monitor.records[-1] if monitor.records else {},
        "model_dir": str(model_dir),
        "genotype_path": genotype_path,
    }


def _warn_if_collapsed(genotype) -> None:
    """One line when the derived normal cell holds no weights at all."""
    if not any(
        holds_weights(op, "normal", source)
        for _, source, op in genotype.edges("normal")
    ):
        print(
            "Warning: the derived normal cell has no parametric op (only "
            "pools, skips and none): a parameter-free collapse; see "
            "weightless_normal in history.json.",
            file=sys.stderr,
        )


def _columns(epochs):
    """Per-epoch log dicts as Keras History columns."""
    keys = dict.fromkeys(k for e in epochs for k in e if k != "epoch")
    return {k: [e.get(k) for e in epochs] for k in keys}
