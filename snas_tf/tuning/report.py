"""The trials tables of `snas tune` and the lines it prints.

`trials.csv` (one row per trial, keys `COLUMNS`) and `trials.md` (the
settings, the same table for reading, the best trial and the failures) are
rewritten after every trial, so an interrupted tuning leaves them current.
"""

import csv
import io
import os

from snas_tf.atomic_files import write_atomic
from snas_tf.genotype import load_genotype
from snas_tf.tuning.tuner import HYPERPARAMETERS

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
    "latency_ms",
    "within_budget",
    "score",
    "genotype",
    "error",
)


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
                latency_ms=(
                    float(metric("latency_ms"))
                    if trial.metrics.exists("latency_ms")
                    else ""
                ),
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
        "| params | madds | latency ms | within budget | score |"
    )
    lines.append("|" + "---|" * 12)
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
            _number(r["latency_ms"], ".3f"),
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


def summary_line(row) -> str:
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
    latency = _number(row["latency_ms"], ".3f")
    latency = f"{latency} ms predicted, " if latency else ""
    return (
        f"Trial {row['trial']} done: {values}: child accuracy "
        f"{row['child_accuracy']:.4f}, {row['params']:,} parameters, "
        f"{row['madds']:,} multiply-adds, {latency}{within}, score "
        f"{row['score']:.4f}"
    )


def budget_text(max_params, max_madds, max_latency_ms=None) -> str:
    """The budgets in words, for trials.md and the messages."""
    parts = []
    if max_latency_ms is not None:
        parts.append(f"<= {max_latency_ms:g} ms (latency table)")
    if max_params is not None:
        parts.append(f"<= {max_params:,} parameters")
    if max_madds is not None:
        parts.append(f"<= {max_madds:,} multiply-adds")
    return " and ".join(parts)


def header_lines(algorithm, budget, retrain, num_classes, smallest) -> list:
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
