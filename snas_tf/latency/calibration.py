"""Calibration of a latency table against whole measured networks.

A table predicts a child network's latency as the sum of its parts' timings
(`snas_tf.latency.cost.predict_latency`). Calibration compares that sum
with the latency of the converted child measured as a whole, over many
genotypes (`benchmarks/latency_model.py`, `snas export --latency-table`):

- `spearman` (rank agreement: does the table order networks right?) and
  `mape` (mean absolute percentage error: is its figure right?);
- the baseline, the best single-scale multiply-add predictor
  `latency ~ a * madds`, and corrections of the table's sum (a scale
  `a * sum`, an affine `a * sum + b`, and `a * sum + c * parts`, where
  `parts` counts the timed parts the network runs (`part_count`): each op
  model's timing holds one interpreter invoke, the whole network pays
  one), each fitted by `fit_scale` / `fit_affine` / `fit_linear` and
  scored leave-one-out (`leave_one_out`): every genotype is predicted by
  a fit on the others only;
- `table_target_for_model`: the target of an exported model, checked
  against a table before any conversion.

Fits minimise the *relative* squared error, sum(((f(x) - y) / y)^2), the
least-squares analogue of the percentage error that is reported. Imports
no TensorFlow.
"""

import math

import numpy as np

from snas_tf.latency.cost import predict_latency
from snas_tf.latency.entries import required_entries
from snas_tf.latency.table import LatencyTable, check_table
from snas_tf.latency.target import TargetNetwork


def _pair(x, y, columns=False):
    """Float arrays; x may be (n, k) with `columns`."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    shape = x.shape[:1] if columns and x.ndim == 2 else x.shape
    if shape != y.shape or y.ndim != 1 or len(y) < 2:
        raise ValueError(
            f"Expected two 1-D sequences of one length >= 2, got shapes "
            f"{x.shape} and {y.shape}."
        )
    return x, y


def _ranks(values) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while (
            end + 1 < len(values)
            and sorted_values[end + 1] == (sorted_values[start])
        ):
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x, y) -> float:
    """Spearman's rank correlation (Pearson's of the tied-mean ranks);
    NaN when either side is constant."""
    x, y = _pair(x, y)
    rx, ry = _ranks(x) - (len(x) + 1) / 2, _ranks(y) - (len(y) + 1) / 2
    norm = math.sqrt(float(np.sum(rx * rx) * np.sum(ry * ry)))
    return float(np.sum(rx * ry) / norm) if norm else float("nan")


def mape(predicted, measured) -> float:
    """Mean absolute percentage error of `predicted` against `measured`
    (all measured values > 0), in percent."""
    p, m = _pair(predicted, measured)
    if np.any(m <= 0):
        raise ValueError("Measured values must be > 0 for a percentage.")
    return float(np.mean(np.abs(p - m) / m) * 100)


def fit_scale(x, y) -> tuple:
    """`(a,)` minimising sum(((a * x - y) / y)^2)."""
    x, y = _pair(x, y)
    r = x / y
    return (float(np.sum(r) / np.sum(r * r)),)


def fit_affine(x, y) -> tuple:
    """`(a, b)` minimising sum(((a * x + b - y) / y)^2)."""
    x, y = _pair(x, y)
    design = np.stack([x / y, 1 / y], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, np.ones_like(y), rcond=None)
    return float(a), float(b)


def fit_linear(x, y) -> tuple:
    """Coefficients c of columns x (n, k), no intercept, minimising
    sum(((x @ c - y) / y)^2)."""
    x, y = _pair(x, y, columns=True)
    c, *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
    return tuple(float(v) for v in c)


def apply_fit(params, x):
    """`a * x (+ b)` of a `fit_scale` / `fit_affine` result, or `x @ c`
    of a `fit_linear` one (x with columns)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        return x @ np.asarray(params)
    return params[0] * x + (params[1] if len(params) > 1 else 0.0)


def leave_one_out(fit, x, y) -> np.ndarray:
    """Each y_i predicted from x_i (a row of x with columns) by `fit` on
    every other pair only."""
    x, y = _pair(x, y, columns=True)
    out = np.empty_like(y)
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        out[i] = apply_fit(fit(x[keep], y[keep]), x[i : i + 1])[0]
    return out


def disagreement(first, second) -> dict:
    """The noise floor of two measurements of the same networks:
    |first - second| / mean(first, second), in percent (median, max)."""
    a, b = _pair(first, second)
    rel = np.abs(a - b) / ((a + b) / 2) * 100
    return {"median_pct": float(np.median(rel)), "max_pct": float(np.max(rel))}


def score(predicted, measured) -> dict:
    """`{"spearman", "mape_pct"}` of one predictor."""
    return {
        "spearman": spearman(predicted, measured),
        "mape_pct": mape(predicted, measured),
    }


def calibration_summary(rows) -> dict:
    """Scores of the table and of the multiply-add baseline.

    Args:
        rows: dicts with `predicted_ms` (the table's sum), `measured_ms`
            and `madds`, one per genotype (at least 3), and optionally
            `parts` (`part_count`).

    Returns:
        `{"n", "table", "table_scaled_loo", "table_affine_loo",
        "madds_scaled_loo", "scale_all", "affine_all", "madds_scale_all"}`
        and, with `parts` in every row, `table_parts_loo` and
        `parts_all` ((a, c) of `a * sum + c * parts`): scores (`score`)
        of the raw sum and of each leave-one-out fit, and each fit on all
        rows (for the record; never scored).
    """
    if len(rows) < 3:
        raise ValueError(f"Need >= 3 genotypes to calibrate, got {len(rows)}.")
    p = np.array([r["predicted_ms"] for r in rows], dtype=np.float64)
    m = np.array([r["measured_ms"] for r in rows], dtype=np.float64)
    madds = np.array([r["madds"] for r in rows], dtype=np.float64)
    extra = {}
    if all("parts" in r for r in rows):
        x = np.stack([p, [float(r["parts"]) for r in rows]], axis=1)
        extra = {
            "table_parts_loo": score(leave_one_out(fit_linear, x, m), m),
            "parts_all": fit_linear(x, m),
        }
    return {
        **extra,
        "n": len(rows),
        "table": score(p, m),
        "table_scaled_loo": score(leave_one_out(fit_scale, p, m), m),
        "table_affine_loo": score(leave_one_out(fit_affine, p, m), m),
        "madds_scaled_loo": score(leave_one_out(fit_scale, madds, m), m),
        "scale_all": fit_scale(p, m),
        "affine_all": fit_affine(p, m),
        "madds_scale_all": fit_scale(madds, m),
    }


def part_count(target: TargetNetwork, genotype) -> int:
    """How many timed parts (entries, with repeats) the child network of
    `genotype` runs: its prediction from a table of 1 µs per entry."""
    ones = LatencyTable(
        target.to_dict(),
        {},
        {i: {"latency_us": 1.0} for i in required_entries(target)},
    )
    return round(predict_latency(ones, target, genotype)["total_us"])


def table_target_for_model(
    table: LatencyTable, config, num_classes: int, genotype
) -> TargetNetwork:
    """The target network of a child network exported with `config` (a
    `RetrainConfig`) and `num_classes` outputs, checked against `table`
    over the table's own search space.

    Raises:
        ValueError: one line, for a table whose target differs from the
            model (`check_table`) or a genotype outside its search space.
    """
    primitives = table.target.get("primitives") or ()
    num_nodes = table.target.get("num_nodes")
    target = TargetNetwork(
        network=config.child.network,
        channels=config.child.channels,
        num_layers=config.child.num_layers,
        image_size=config.data.image_size,
        num_classes=int(num_classes),
        primitives=tuple(primitives),
        num_nodes=num_nodes if isinstance(num_nodes, int) else 4,
    )
    check_table(table, target, "the exported model")
    try:
        genotype.validate(target.search_space)
    except ValueError as e:
        raise ValueError(
            f"Latency table {table.path!r}: the exported genotype is outside "
            f"its search space: {e}"
        ) from e
    return target


__all__ = [
    "apply_fit",
    "calibration_summary",
    "disagreement",
    "fit_affine",
    "fit_linear",
    "fit_scale",
    "leave_one_out",
    "mape",
    "part_count",
    "score",
    "spearman",
    "table_target_for_model",
]
