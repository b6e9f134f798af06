"""`snas tune`: keras-tuner budget search over the SNAS hyperparameters.

Each trial runs a whole search (`run_search`) with its own resource
constraint strength η (`search.penalty_strength`) and temperature schedule
(`search.temperature_initial`, `temperature_final`, `temperature_schedule`),
derives the genotype and measures that child network at the retraining size
of a `RetrainConfig` (`snas_tf.tuning.budget`, which also gives the
objective; the tuner and its oracle are in `snas_tf.tuning.tuner`).

Writes into `model_dir`: `config.yaml` (the base search config) and
`tune.yaml` (algorithm, budgets, ranges, retraining config) first, then
`tuner/` (keras-tuner's project: oracle and trial state), `trials/<id>/`
(each trial's search outputs), `trials.csv` and `trials.md` (after every
trial), `best_config.yaml` and `best_genotype.json`. Running again with the
same settings and `model_dir` resumes: completed trials are kept, an
interrupted one runs again (and `run_search` resumes its search from the
trial's checkpoint), and a larger `max_trials` adds trials.

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §2.4 (resource constraint) and §3.1 (derivation) [P].
"""

import json
import os

from snas_tf import dir_lock
from snas_tf.atomic_files import write_atomic
from snas_tf.config import Config, RetrainConfig, save_config
from snas_tf.data import num_classes as dataset_classes
from snas_tf.data import search_data
from snas_tf.genotype import Genotype
from snas_tf.latency.cost import predict_latency, tuning_latency_table
from snas_tf.runtime import configure_threads
from snas_tf.schedules import TEMPERATURE_SCHEDULES
from snas_tf.search_space import SearchSpace
from snas_tf.trainers.search import arch_fraction, run_search
from snas_tf.tuning.budget import check_budget, smallest_network
from snas_tf.tuning.report import (
    budget_text,
    header_lines,
    summary_line,
    trial_rows,
    write_tables,
)
from snas_tf.tuning.resume import start_or_resume
from snas_tf.tuning.tuner import (
    ALGORITHMS,
    MAX_CONSECUTIVE_FAILURES,
    RANGES,
    SNASTuner,
    make_oracle,
    trial_config,
)

_DEFAULT_RETRAIN = RetrainConfig()


def _check_args(
    algorithm, max_params, max_madds, max_trials, max_latency_ms=None
) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"Unknown algorithm {algorithm!r}. Expected one of {ALGORITHMS}."
        )
    if max_params is None and max_madds is None and max_latency_ms is None:
        raise ValueError(
            "Give a budget: max_params (--max-params), max_madds "
            "(--max-madds) and/or max_latency_ms (--max-latency-ms)."
        )
    if max_latency_ms is not None and not (
        isinstance(max_latency_ms, int | float)
        and not isinstance(max_latency_ms, bool)
        and 0 < max_latency_ms < float("inf")
    ):
        raise ValueError(
            f"max_latency_ms must be a number > 0, got {max_latency_ms!r}."
        )
    for name, value in (
        ("max_params", max_params),
        ("max_madds", max_madds),
        ("max_trials", max_trials),
    ):
        if value is None and name != "max_trials":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")


def verify_latency(genotype, retrain, num_classes, table, predicted_ms):
    """Measures the best child's TFLite latency as the table was timed
    (same runtime, threads, format, runs, clock), next to its prediction.

    Returns:
        `{"predicted_ms", "measured_ms" (None for a table imported from
        another device: measure it there), "threads", "format"}`.
    """
    runtime = table.runtime
    result = {
        "predicted_ms": predicted_ms,
        "measured_ms": None,
        "threads": runtime.get("threads"),
        "format": runtime.get("format"),
    }
    if runtime.get("source") != "measured":
        return result
    import tempfile

    import numpy as np

    from snas_tf.export.op_latency import time_op_model
    from snas_tf.export.tflite import convert_tflite
    from snas_tf.latency.table import table_clock
    from snas_tf.models import build_child_network

    model = build_child_network(
        genotype, auxiliary=False, **retrain.child_kwargs(num_classes)
    )
    side = retrain.data.image_size
    images = np.random.default_rng(0).normal(size=(8, side, side, 3))
    blob = convert_tflite(model, runtime["format"], images.astype("float32"))
    with tempfile.TemporaryDirectory(prefix="snas-tune-") as tmp:
        path = os.path.join(tmp, "best.tflite")
        with open(path, "wb") as f:
            f.write(blob)
        measured = time_op_model(
            path,
            runtime["threads"],
            runtime["runs"],
            runtime["warmup"],
            clock=table_clock(runtime),
        )
    result["measured_ms"] = measured / 1e3
    return result


def _finish(rows, config, model_dir, budget, log) -> dict:
    """Checks the trials, writes the best config and genotype.

    Raises:
        RuntimeError: if no trial completed, or none met the budget.
    """
    table = os.path.join(model_dir, "trials.md")
    completed = [r for r in rows if r["status"] == "COMPLETED"]
    failed = [r for r in rows if r["status"] != "COMPLETED"]
    if not completed:
        first = failed[0]["error"] if failed else "no trial ran"
        raise RuntimeError(
            f"Every trial failed ({len(failed)}); the first failure: "
            f"{first} (see {table})."
        )
    if failed:
        log(
            f"Warning: {len(failed)} of {len(rows)} trials failed; see {table}."
        )
    best = max(completed, key=lambda r: r["score"])
    if not best["within_budget"]:
        # No zero exit: best_genotype.json would name a network over the
        # budget, and a script would go on to retrain it.
        raise RuntimeError(
            f"No trial met the budget ({budget}); the closest, trial "
            f"{best['trial']}, has {best['params']:,} parameters and "
            f"{best['madds']:,} multiply-adds. See {table}; run again with "
            "a larger max_trials (--max-trials) to continue the tuning."
        )
    paths = {
        "best_config": os.path.join(model_dir, "best_config.yaml"),
        "best_genotype": os.path.join(model_dir, "best_genotype.json"),
        "trials_csv": os.path.join(model_dir, "trials.csv"),
        "trials_md": table,
    }
    save_config(trial_config(config, best), paths["best_config"])
    genotype = Genotype.from_string(best["genotype"])
    write_atomic(paths["best_genotype"], genotype.to_json(indent=2) + "\n")
    latency = best["latency_ms"]
    latency = f", {latency:.3f} ms predicted" if latency != "" else ""
    log(
        f"Best: trial {best['trial']}, child accuracy "
        f"{best['child_accuracy']:.4f}, {best['params']:,} parameters, "
        f"{best['madds']:,} multiply-adds{latency}."
    )
    log(f"Outputs written to {model_dir}")
    return {"best": best, "trials": rows, "model_dir": str(model_dir), **paths}


@dir_lock.holding("model_dir")
def run_tune(
    config: Config,
    model_dir,
    max_params: int | None = None,
    max_madds: int | None = None,
    max_trials: int = 10,
    algorithm: str = "bayesian",
    retrain_config: RetrainConfig = _DEFAULT_RETRAIN,
    log=print,
    max_latency_ms: float | None = None,
    latency_table=None,
) -> dict:
    """Tunes η and the temperature schedule for a budget (module doc).

    Args:
        config: the base search `Config`; every trial replaces
            `search.penalty_strength`, `temperature_initial`,
            `temperature_final` and `temperature_schedule`.
        model_dir: output directory; the same one resumes a tuning.
        max_params: budget of trainable parameters of the retrained child
            (auxiliary head excluded), or None.
        max_madds: budget of multiply-adds per image, or None. At least one
            budget is required.
        max_trials: trials in all, counting those of a resumed tuning.
        algorithm: "bayesian" (Gaussian-process Bayesian optimisation) or
            "random".
        retrain_config: gives the child's size (`child_kwargs`) and data set
            (its classes); default: CIFAR-10, 20 cells, 36 channels.
        log: prints the per-trial summary lines.
        max_latency_ms: latency budget of the retrained child, predicted
            from `latency_table`, or None.
        latency_table: path of a latency table of the retraining's
            network (`snas latency-table --config RETRAIN_CONFIG`);
            needed by `max_latency_ms`. The best child is then converted
            to TFLite and timed as the table was (`latency` in the result
            and `best_latency.json`: predicted and measured ms).

    Returns:
        A dict: `best` (the best trial's row), `trials` (all rows, keys
        `snas_tf.tuning.report.COLUMNS`), `smallest` (see
        `smallest_network`), `model_dir` and the paths `best_config`,
        `best_genotype`, `trials_csv`, `trials_md`.

    Raises:
        ValueError: for bad arguments, a budget below the smallest derivable
            network or a bad data set (before anything is written), a
            `model_dir` holding a tuning with other settings, or one
            written by another live process (`snas_tf.dir_lock`).
        RuntimeError: if every trial failed, `MAX_CONSECUTIVE_FAILURES`
            trials in a row failed, or no trial met the budget (after the
            trials tables are written).
    """
    _check_args(algorithm, max_params, max_madds, max_trials, max_latency_ms)
    retrain = retrain_config
    table, target = tuning_latency_table(
        config, retrain, max_latency_ms, latency_table
    )
    configure_threads(config.runtime)  # before TensorFlow runs any op
    space = SearchSpace(config.model.primitives, config.model.num_nodes)
    num_classes = dataset_classes(retrain.data)
    rule = config.search.resolved_derivation_rule
    smallest = smallest_network(space, rule, retrain, num_classes)
    check_budget(max_params, max_madds, smallest, retrain)
    s = config.search
    # A bad data set fails here, before anything is written (as run_search).
    search_data(
        config.data,
        s.batch_size,
        config.runtime.seed,
        s.epochs,
        (0, 0),
        arch_fraction(s),
    )
    settings = {
        "algorithm": algorithm,
        "max_params": max_params,
        "max_madds": max_madds,
        **(
            {}
            if max_latency_ms is None
            else {
                "max_latency_ms": max_latency_ms,
                "latency_table": os.path.abspath(latency_table),
            }
        ),
        "hyperparameters": {
            **{name: list(bounds) for name, bounds in RANGES.items()},
            "temperature_schedule": list(TEMPERATURE_SCHEDULES),
        },
        "child": retrain.child_kwargs(num_classes),
        "smallest": smallest,
    }
    start_or_resume(model_dir, config, settings)
    trials_dir = os.path.join(model_dir, "trials")
    budget = budget_text(max_params, max_madds, max_latency_ms)
    header = header_lines(algorithm, budget, retrain, num_classes, smallest)

    def report(trial, ended=True):
        if not ended:
            if config.runtime.verbose:
                log(f"Trial {trial.trial_id}: searching.")
            return
        rows = trial_rows(tuner.oracle, trials_dir)
        write_tables(rows, model_dir, header)
        log(summary_line(next(r for r in rows if r["trial"] == trial.trial_id)))
        finished = [tuner.oracle.trials[i] for i in tuner.oracle.end_order]
        streak = finished[-MAX_CONSECUTIVE_FAILURES:]
        if len(streak) == MAX_CONSECUTIVE_FAILURES and all(
            t.status == "FAILED" for t in streak
        ):
            first = next((r["error"] for r in rows if r["error"]), "")
            raise RuntimeError(
                f"{MAX_CONSECUTIVE_FAILURES} trials in a row failed; the "
                f"first failure: {first} (see "
                f"{os.path.join(model_dir, 'trials.md')})."
            )

    tuner = SNASTuner(
        make_oracle(algorithm, max_trials, config.runtime.seed),
        config,
        retrain,
        num_classes,
        max_params,
        max_madds,
        trials_dir,
        # Looked up at call time, so tests can substitute run_search.
        run_search,
        report=report,
        latency=(
            None
            if table is None
            else lambda g: predict_latency(table, target, g)["total_us"] / 1e3
        ),
        max_latency_ms=max_latency_ms,
        directory=str(model_dir),
        project_name="tuner",
        overwrite=False,
    )
    tuner.search(verbose=0)
    rows = trial_rows(tuner.oracle, trials_dir)
    write_tables(rows, model_dir, header)
    result = _finish(rows, config, model_dir, budget, log)
    if table is not None:
        best = result["best"]
        genotype = Genotype.from_string(best["genotype"])
        latency = verify_latency(
            genotype, retrain, num_classes, table, best["latency_ms"]
        )
        write_atomic(
            os.path.join(model_dir, "best_latency.json"),
            json.dumps(latency, indent=2) + "\n",
        )
        measured = latency["measured_ms"]
        log(
            f"Best child latency: {latency['predicted_ms']:.3f} ms predicted"
            + (
                f", {measured:.3f} ms measured (TFLite {latency['format']}, "
                f"{latency['threads']} thread(s))."
                if measured is not None
                else "; the table was imported: measure it on its device."
            )
        )
        result["latency"] = latency
    return {**result, "smallest": smallest}
