"""`snas tune`: keras-tuner budget search over the SNAS hyperparameters.

Each trial runs a whole search (`run_search`) with its own resource
constraint strength η (`search.penalty_strength`) and temperature schedule
(`search.temperature_initial`, `temperature_final`, `temperature_schedule`),
derives the genotype and measures that child network at the retraining size
of a `RetrainConfig`: trainable parameters without the auxiliary head (the
paper's convention) and multiply-adds per image (`snas summary` counts the
same way).

Objective (maximised): the child accuracy without retraining, i.e.
`val_child_accuracy` of the last search epoch (the supernet in argmax mode,
SNAS.md §6), when the child is within every given budget; otherwise
`-(max_k value_k / budget_k - 1)`, minus how far (as a fraction) the worst
metric overshoots its budget. An accuracy is in [0, 1] and an overshoot is
> 0, so every over-budget trial ranks below every in-budget one, and the
oracle still learns which over-budget trials came closest.

Hyperband is not offered. Its budget is epochs, and a SNAS search of n
epochs is not the first n epochs of a longer one: λ anneals (and θ's
learning rate decays) over the configured epochs, so a short rung scores a
search whose temperature never got low (or one annealed on another
schedule), and promoting a trial by resuming its weights changes its
schedule mid-search. Random search is offered beside Bayesian optimisation.

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

import csv
import dataclasses
import io
import os

import keras
import keras_tuner
import yaml

from snas_tf.atomic_files import write_atomic
from snas_tf.config import (
    Config,
    RetrainConfig,
    config_to_dict,
    load_config,
    save_config,
)
from snas_tf.data import num_classes as dataset_classes
from snas_tf.data import search_data
from snas_tf.genotype import RULES, Genotype, load_genotype
from snas_tf.models import build_child_network, count_parameters, multiply_adds
from snas_tf.models.child_network import cell_specs
from snas_tf.ops import build_op
from snas_tf.runtime import configure_threads
from snas_tf.schedules import TEMPERATURE_SCHEDULES
from snas_tf.search_space import NUM_CELL_INPUTS, SearchSpace
from snas_tf.trainers.search import run_search

ALGORITHMS = ("bayesian", "random")
# Log-uniform ranges. The temperature ranges do not overlap, so λ never
# rises; they bracket the reference's 1.0 -> 0.03 (SNAS.md §2).
RANGES = {
    "penalty_strength": (1e-5, 1e-1),
    "temperature_initial": (0.5, 5.0),
    "temperature_final": (0.01, 0.5),
}
HYPERPARAMETERS = (*RANGES, "temperature_schedule")
# Keys of tune.yaml a resumed tuning must match (max_trials may grow).
TUNE_KEYS = ("algorithm", "max_params", "max_madds", "hyperparameters", "child")
# As keras-tuner's default: stop a tuning whose trials keep failing.
MAX_CONSECUTIVE_FAILURES = 3
COLUMNS = (
    "trial",
    "status",
    "penalty_strength",
    "temperature_initial",
    "temperature_final",
    "temperature_schedule",
    "child_accuracy",
    "params",
    "madds",
    "within_budget",
    "score",
    "genotype",
    "error",
)
_DEFAULT_RETRAIN = RetrainConfig()


def budget_score(accuracy, params, madds, max_params=None, max_madds=None):
    """The objective of one trial (see the module docstring).

    Returns:
        `(score, within_budget)`.
    """
    ratios = [
        value / budget
        for value, budget in ((params, max_params), (madds, max_madds))
        if budget is not None
    ]
    overshoot = max(ratios) - 1.0
    if overshoot <= 0:
        return float(accuracy), True
    return -overshoot, False


def measure(genotype, retrain: RetrainConfig, num_classes: int):
    """(parameters without auxiliary head, multiply-adds per image) of the
    genotype's child network at the size of `retrain`."""
    model = build_child_network(
        genotype, auxiliary=False, **retrain.child_kwargs(num_classes)
    )
    return count_parameters(model), multiply_adds(model)


def _op_costs(primitives, channels):
    """{(op, stride): (params, madds)} of every op but `none`, measured on
    its own with the same 8x8 output for both strides."""
    costs = {}
    for op_name in primitives:
        for stride in (1, 2) if op_name != "none" else ():
            x = keras.Input((8 * stride, 8 * stride, channels))
            op = build_op(
                op_name, channels, stride, True, f"probe_{op_name}_{stride}"
            )
            model = keras.Model(x, op(x))
            costs[op_name, stride] = (
                count_parameters(model),
                multiply_adds(model),
            )
    return costs


def _cheapest_edges(j, count, input_stride, cheapest, exclude=()):
    """The `count` cheapest edges into node j (all of them for None) as
    (op, source) pairs; `cheapest(stride)` gives (cost, op)."""
    edges = []
    for source in range(NUM_CELL_INPUTS + j):
        if source in exclude:
            continue
        # SNAS.md §1: edges leaving a reduction cell's inputs have stride 2.
        stride = input_stride if source < NUM_CELL_INPUTS else 1
        cost, op = cheapest(stride)
        edges.append((cost, source, op))
    kept = sorted(edges)[:count] if count else edges
    return sorted((op, source) for _, source, op in kept)


def _cheapest_cells(space: SearchSpace, rule: str, costs, k: int) -> dict:
    """The candidate cheapest cells for metric k (0 params, 1 madds).

    Which inputs a cell reads decides which earlier cells the child keeps
    at all: an unread cell output leaves the functional graph with its whole
    branch. So each cell type gets one candidate per way of reading its
    inputs. edge_all may drop any edge: reading input 1 only costs its
    preprocess alone (every node empty: zeros of c_{k-1}); reading input 0
    only needs one edge into every node (an empty node reads input 1);
    reading both costs more than input 1 only. Without `none` edge_all keeps
    every edge; top2 always reads both inputs (node 0 has only those two).

    Returns:
        {"normal": [nodes, ...], "reduce": [nodes, ...]}.
    """
    ops = [p for p in space.primitives if p != "none"]

    def cheapest(stride):
        # Metric k first, then the other metric, then primitive order.
        return min(
            ((costs[o, stride][k], costs[o, stride][1 - k], i), o)
            for i, o in enumerate(ops)
        )

    n = space.num_nodes
    cells = {}
    for cell, stride in (("normal", 1), ("reduce", 2)):
        empty = [[] for _ in range(n)]
        if not ops:
            cells[cell] = [empty]
        elif rule == "top2":
            cells[cell] = [
                [_cheapest_edges(j, 2, stride, cheapest) for j in range(n)]
            ]
        elif "none" not in space.primitives:
            cells[cell] = [
                [_cheapest_edges(j, None, stride, cheapest) for j in range(n)]
            ]
        else:
            only0 = [
                _cheapest_edges(j, 1, stride, cheapest, exclude=(1,))
                for j in range(n)
            ]
            cells[cell] = [empty, only0]
    return cells


def smallest_network(
    space: SearchSpace, rule: str, retrain: RetrainConfig, num_classes: int
) -> dict:
    """The smallest child networks the derivation rule can produce.

    The candidates of `_cheapest_cells`, with the cheapest op of each stride
    ranked at each channel count of the network, are built at the size of
    `retrain` and measured. With the SNAS primitives the cheapest ops
    (identity; a pool and its BatchNorm) win at every channel count, so the
    figures are exact minima; with an op set whose ranking changes with the
    channel count they are the best of those candidates.

    Returns:
        {"params": int, "params_genotype": str, "madds": int,
        "madds_genotype": str}: the fewest parameters and the fewest
        multiply-adds, each with a genotype that has them.

    Raises:
        ValueError: for an unknown rule or a bad retraining size.
    """
    if rule not in RULES:
        raise ValueError(
            f"Unknown search.derivation_rule {rule!r}. Expected one of {RULES}."
        )
    child = retrain.child
    specs = cell_specs(child.network, child.channels, child.num_layers)
    measured = {}
    for channels in sorted({spec.channels for spec in specs}):
        costs = _op_costs(space.primitives, channels)
        for k in (0, 1):
            cells = _cheapest_cells(space, rule, costs, k)
            for normal in cells["normal"]:
                for reduce in cells["reduce"]:
                    genotype = Genotype(normal=normal, reduce=reduce)
                    key = genotype.to_string()
                    if key not in measured:
                        measured[key] = measure(genotype, retrain, num_classes)
    by_params = min(measured.items(), key=lambda item: item[1])
    by_madds = min(measured.items(), key=lambda item: item[1][::-1])
    return {
        "params": by_params[1][0],
        "params_genotype": by_params[0],
        "madds": by_madds[1][1],
        "madds_genotype": by_madds[0],
    }


def _check_budget(max_params, max_madds, smallest, retrain) -> None:
    """Raises if a budget is below the smallest derivable network."""
    child = retrain.child
    where = f"{child.num_layers} cells, {child.channels} channels"
    size = retrain.data.image_size
    if max_params is not None and max_params < smallest["params"]:
        raise ValueError(
            f"--max-params {max_params} is below the smallest derivable "
            f"network ({smallest['params']:,} parameters at {where})."
        )
    if max_madds is not None and max_madds < smallest["madds"]:
        raise ValueError(
            f"--max-madds {max_madds} is below the smallest derivable "
            f"network ({smallest['madds']:,} multiply-adds per {size}x{size} "
            f"image at {where})."
        )


def _check_args(algorithm, max_params, max_madds, max_trials) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(
            f"Unknown algorithm {algorithm!r}. Expected one of {ALGORITHMS}."
        )
    if max_params is None and max_madds is None:
        raise ValueError(
            "Give a budget: max_params (--max-params) and/or max_madds "
            "(--max-madds)."
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


def trial_config(config: Config, values: dict) -> Config:
    """`config` with a trial's hyperparameter values in `search`."""
    tuned = {
        name: float(values[name]) if name in RANGES else str(values[name])
        for name in HYPERPARAMETERS
    }
    return dataclasses.replace(
        config, search=dataclasses.replace(config.search, **tuned)
    )


def search_hyperparameters() -> keras_tuner.HyperParameters:
    """η and the temperature schedule (log scales), as keras-tuner sees them."""
    hp = keras_tuner.HyperParameters()
    for name, (low, high) in RANGES.items():
        hp.Float(name, low, high, sampling="log")
    hp.Choice("temperature_schedule", list(TEMPERATURE_SCHEDULES))
    return hp


class SNASTuner(keras_tuner.Tuner):
    """Runs one SNAS search per trial and scores its derived child.

    Args:
        oracle: a keras-tuner oracle with the objective `"score"` (max).
        base_config: the search `Config`; each trial replaces its tuned
            `search` fields.
        retrain: the `RetrainConfig` giving the child network's size.
        num_classes: classes of the child network.
        max_params: parameter budget, or None.
        max_madds: multiply-add budget, or None.
        trials_dir: each trial's search writes into `trials_dir/<id>`.
        report: called with the oracle's record of each ended trial.
        **kwargs: `keras_tuner.Tuner` arguments (directory, project_name).
    """

    def __init__(
        self,
        oracle,
        base_config,
        retrain,
        num_classes,
        max_params,
        max_madds,
        trials_dir,
        report=None,
        **kwargs,
    ):
        super().__init__(oracle, **kwargs)
        self.base_config = base_config
        self.retrain = retrain
        self.num_classes = num_classes
        self.max_params = max_params
        self.max_madds = max_madds
        self.trials_dir = trials_dir
        self.report = report

    def run_trial(self, trial, *args, **kwargs):
        # Each trial builds a new supernet: drop the previous one's graphs.
        keras.backend.clear_session()
        config = trial_config(self.base_config, trial.hyperparameters.values)
        # Looked up at call time, so tests can substitute run_search.
        summary = run_search(
            config, os.path.join(self.trials_dir, trial.trial_id)
        )
        accuracy = summary["last_epoch"].get("val_child_accuracy")
        if accuracy is None:
            raise RuntimeError(
                "The search reported no val_child_accuracy for its last epoch."
            )
        genotype = Genotype.from_string(summary["genotype"])
        params, madds = measure(genotype, self.retrain, self.num_classes)
        score, within = budget_score(
            accuracy, params, madds, self.max_params, self.max_madds
        )
        return {
            "score": score,
            "child_accuracy": float(accuracy),
            "params": float(params),
            "madds": float(madds),
            "within_budget": float(within),
        }

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        if self.report is not None:
            self.report(trial, ended=False)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)  # records the status, saves the state
        if self.report is not None:
            self.report(self.oracle.get_trial(trial.trial_id))


def _error_line(message) -> str:
    """The exception line of a keras-tuner trial message (a traceback)."""
    lines = [line for line in (message or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def trial_rows(oracle, trials_dir) -> list:
    """One dict per trial (keys `COLUMNS`), in trial order."""
    rows = []
    for trial in sorted(oracle.trials.values(), key=lambda t: int(t.trial_id)):
        values = trial.hyperparameters.values
        row = dict.fromkeys(COLUMNS, "")
        row.update(trial=trial.trial_id, status=trial.status)
        row.update({name: values.get(name, "") for name in HYPERPARAMETERS})
        if trial.status == "COMPLETED":
            metric = trial.metrics.get_last_value
            row.update(
                child_accuracy=float(metric("child_accuracy")),
                params=int(metric("params")),
                madds=int(metric("madds")),
                within_budget=bool(metric("within_budget")),
                score=float(metric("score")),
            )
            path = os.path.join(trials_dir, trial.trial_id, "genotype.json")
            row["genotype"] = load_genotype(path).to_string()
        else:
            row["error"] = _error_line(trial.message)
        rows.append(row)
    return rows


def _number(value, spec) -> str:
    return format(value, spec) if isinstance(value, float | int) else ""


def _markdown(rows, header: list) -> str:
    """trials.md: the settings, then one table row per trial."""
    lines = [*header, ""]
    lines.append(
        "| trial | status | η | λ initial | λ final | schedule | child acc "
        "| params | madds | within budget | score |"
    )
    lines.append("|" + "---|" * 11)
    for r in rows:
        within = {True: "yes", False: "**no**"}.get(r["within_budget"], "")
        cells = [
            r["trial"],
            r["status"],
            _number(r["penalty_strength"], ".2e"),
            _number(r["temperature_initial"], ".3g"),
            _number(r["temperature_final"], ".3g"),
            r["temperature_schedule"],
            _number(r["child_accuracy"], ".4f"),
            _number(r["params"], ",d"),
            _number(r["madds"], ",d"),
            within,
            _number(r["score"], ".4f"),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    within = [r for r in rows if r["within_budget"] is True]
    if within:
        best = max(within, key=lambda r: r["score"])
        lines += ["", f"Best: trial {best['trial']}."]
    else:
        lines += ["", "**No trial is within the budget.**"]
    failed = [r for r in rows if r["error"]]
    if failed:
        lines += ["", "Failures:", ""]
        lines += [f"- trial {r['trial']}: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def write_tables(rows, model_dir, header: list) -> None:
    """Writes trials.csv and trials.md atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(os.path.join(model_dir, "trials.csv"), buffer.getvalue())
    write_atomic(os.path.join(model_dir, "trials.md"), _markdown(rows, header))


def _summary_line(row) -> str:
    """The one line printed after each trial."""
    values = (
        f"η={_number(row['penalty_strength'], '.2e')} λ "
        f"{_number(row['temperature_initial'], '.3g')}->"
        f"{_number(row['temperature_final'], '.3g')} "
        f"{row['temperature_schedule']}"
    )
    if row["status"] != "COMPLETED":
        return f"Trial {row['trial']} {row['status']}: {values}: {row['error']}"
    within = "within budget" if row["within_budget"] else "OVER BUDGET"
    return (
        f"Trial {row['trial']} done: {values}: child accuracy "
        f"{row['child_accuracy']:.4f}, {row['params']:,} parameters, "
        f"{row['madds']:,} multiply-adds, {within}, score {row['score']:.4f}"
    )


def _comparable(config: Config) -> dict:
    # Progress output does not change a trial's result.
    runtime = dataclasses.replace(config.runtime, verbose=0)
    return config_to_dict(dataclasses.replace(config, runtime=runtime))


def _start_or_resume(model_dir, config: Config, settings: dict) -> None:
    """Writes config.yaml and tune.yaml, or checks that those of a started
    tuning match (then keras-tuner resumes it).

    Raises:
        ValueError: if `model_dir` holds a tuning with other settings.
    """
    config_path = os.path.join(model_dir, "config.yaml")
    tune_path = os.path.join(model_dir, "tune.yaml")
    if not os.path.isfile(tune_path):
        save_config(config, config_path)
        # tune.yaml last: it marks a started tuning.
        write_atomic(tune_path, yaml.safe_dump(settings, sort_keys=False))
        return
    with open(tune_path, encoding="utf-8") as f:
        saved = yaml.safe_load(f) or {}
    current = yaml.safe_load(yaml.safe_dump(settings))
    differ = [k for k in TUNE_KEYS if saved.get(k) != current.get(k)]
    if _comparable(load_config([config_path])) != _comparable(config):
        differ.append("search config")
    if differ:
        raise ValueError(
            f"{str(model_dir)!r} holds a tuning with other {differ}; run "
            "with the same settings to resume it, or use a new --model-dir."
        )


def _make_oracle(algorithm, max_trials, seed):
    kwargs = dict(
        objective=keras_tuner.Objective("score", direction="max"),
        max_trials=max_trials,
        seed=seed,
        hyperparameters=search_hyperparameters(),
        allow_new_entries=False,
        # SNASTuner stops after MAX_CONSECUTIVE_FAILURES itself, after the
        # failed trial's state is saved (keras-tuner raises before).
        max_consecutive_failed_trials=None,
    )
    if algorithm == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(**kwargs)
    return keras_tuner.oracles.RandomSearchOracle(**kwargs)


def _budget_text(max_params, max_madds) -> str:
    parts = []
    if max_params is not None:
        parts.append(f"<= {max_params:,} parameters")
    if max_madds is not None:
        parts.append(f"<= {max_madds:,} multiply-adds")
    return " and ".join(parts)


def _header(algorithm, budget, retrain, num_classes, smallest) -> list:
    """The lines above the table in trials.md."""
    child, size = retrain.child, retrain.data.image_size
    return [
        f"# snas tune ({algorithm})",
        "",
        f"Budget: {budget}; {child.network} network, {child.num_layers} "
        f"cells, {child.channels} channels, {num_classes} classes, "
        f"{size}x{size} images; parameters without the auxiliary head.",
        f"Smallest derivable network: {smallest['params']:,} parameters, "
        f"{smallest['madds']:,} multiply-adds.",
        "Score: child accuracy without retraining (last search epoch) when "
        "within budget, else -(worst value/budget ratio - 1).",
    ]


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
    log(
        f"Best: trial {best['trial']}, child accuracy "
        f"{best['child_accuracy']:.4f}, {best['params']:,} parameters, "
        f"{best['madds']:,} multiply-adds."
    )
    log(f"Outputs written to {model_dir}")
    return {"best": best, "trials": rows, "model_dir": str(model_dir), **paths}


def run_tune(
    config: Config,
    model_dir,
    max_params: int | None = None,
    max_madds: int | None = None,
    max_trials: int = 10,
    algorithm: str = "bayesian",
    retrain_config: RetrainConfig = _DEFAULT_RETRAIN,
    log=print,
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

    Returns:
        A dict: `best` (the best trial's row), `trials` (all rows, keys
        `COLUMNS`), `smallest` (see `smallest_network`), `model_dir` and
        the paths `best_config`, `best_genotype`, `trials_csv`, `trials_md`.

    Raises:
        ValueError: for bad arguments, a budget below the smallest derivable
            network or a bad data set (before anything is written), or a
            `model_dir` holding a tuning with other settings.
        RuntimeError: if every trial failed, `MAX_CONSECUTIVE_FAILURES`
            trials in a row failed, or no trial met the budget (after the
            trials tables are written).
    """
    _check_args(algorithm, max_params, max_madds, max_trials)
    configure_threads(config.runtime)  # before TensorFlow runs any op
    retrain = retrain_config
    space = SearchSpace(config.model.primitives, config.model.num_nodes)
    num_classes = dataset_classes(retrain.data)
    rule = config.search.derivation_rule
    smallest = smallest_network(space, rule, retrain, num_classes)
    _check_budget(max_params, max_madds, smallest, retrain)
    s = config.search
    # A bad data set fails here, before anything is written (as run_search).
    search_data(config.data, s.batch_size, config.runtime.seed, s.epochs)
    settings = {
        "algorithm": algorithm,
        "max_params": max_params,
        "max_madds": max_madds,
        "hyperparameters": {
            **{name: list(bounds) for name, bounds in RANGES.items()},
            "temperature_schedule": list(TEMPERATURE_SCHEDULES),
        },
        "child": retrain.child_kwargs(num_classes),
        "smallest": smallest,
    }
    _start_or_resume(model_dir, config, settings)
    trials_dir = os.path.join(model_dir, "trials")
    budget = _budget_text(max_params, max_madds)
    header = _header(algorithm, budget, retrain, num_classes, smallest)

    def report(trial, ended=True):
        if not ended:
            if config.runtime.verbose:
                log(f"Trial {trial.trial_id}: searching.")
            return
        rows = trial_rows(tuner.oracle, trials_dir)
        write_tables(rows, model_dir, header)
        log(
            _summary_line(next(r for r in rows if r["trial"] == trial.trial_id))
        )
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
        _make_oracle(algorithm, max_trials, config.runtime.seed),
        config,
        retrain,
        num_classes,
        max_params,
        max_madds,
        trials_dir,
        report=report,
        directory=str(model_dir),
        project_name="tuner",
        overwrite=False,
    )
    tuner.search(verbose=0)
    rows = trial_rows(tuner.oracle, trials_dir)
    write_tables(rows, model_dir, header)
    return {
        **_finish(rows, config, model_dir, budget, log),
        "smallest": smallest,
    }
