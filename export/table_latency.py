"""A latency table's prediction next to the exported file's timing.

`snas export --latency-table` checks the table against the exported
network before any conversion (`check_latency_table`), then times the
TFLite file of the table's format as the table was timed (LiteRT via
`export.op_latency.time_op_model`: same threads, runs, warm-ups and
clock) and
puts it next to the table's prediction (`snas_tf.latency.cost`) in the
report (`table_latency`, `latency_table_md`).
"""

from snas_tf.export.op_latency import time_op_model
from snas_tf.latency.calibration import table_target_for_model
from snas_tf.latency.cost import predict_latency
from snas_tf.latency.table import table_clock


def check_latency_table(table, source, formats):
    """The target network of `source` checked against a latency table.

    Raises:
        ValueError: one line, for a table of another network or search
            space, or whose format's TFLite file is not among `formats`.
    """
    fmt = table.runtime.get("format")
    target = table_target_for_model(
        table,
        source.config,
        source.model.outputs[0].shape[-1],
        source.genotype,
    )
    if f"tflite_{fmt}" not in formats:
        raise ValueError(
            f"Latency table {table.path!r} is timed in {fmt}; add "
            f"tflite_{fmt} to --formats to measure the same file."
        )
    return target


def table_latency(table, target, genotype, artifacts) -> dict:
    """The table's predicted latency of `genotype` and the TFLite file of
    the table's format timed as the table was (LiteRT, its threads, runs
    and warm-ups; `export.op_latency.time_op_model`); `measured_ms` is
    None for a table timed on another device."""
    runtime = table.runtime
    predicted = predict_latency(table, target, genotype)["total_us"] / 1e3
    result = {
        "path": table.path,
        "format": runtime.get("format"),
        "threads": runtime.get("threads"),
        "runs": runtime.get("runs"),
        "warmup": runtime.get("warmup"),
        "clock": table_clock(runtime),
        "scale": table.scale,
        "source": runtime.get("source"),
        "predicted_ms": predicted,
        "measured_ms": None,
        "error_pct": None,
    }
    if runtime.get("source") == "measured":
        name = f"tflite_{runtime['format']}"
        path = next(a.path for a in artifacts if a.name == name)
        measured = (
            time_op_model(
                path,
                runtime["threads"],
                runtime["runs"],
                runtime["warmup"],
                clock=table_clock(runtime),
            )
            / 1e3
        )
        result["measured_ms"] = measured
        result["error_pct"] = (predicted / measured - 1) * 100
    return result


def latency_table_md(t) -> str:
    """The report.md line of `table_latency`'s result."""
    where = (
        f"measured here {t['measured_ms']:.2f} ms (prediction "
        f"{t['error_pct']:+.1f}%)"
        if t["measured_ms"] is not None
        else "not measured here (the table was timed on another device)"
    )
    return (
        f"- latency table `{t['path']}`: predicted {t['predicted_ms']:.2f} "
        f"ms (calibration scale {t['scale']:.3f}), {where}; LiteRT, "
        f"{t['format']}, {t['threads']} thread(s), "
        f"median of {t['runs']} after {t['warmup']} warm-ups, "
        f"{t['clock']} clock"
    )


__all__ = ["check_latency_table", "latency_table_md", "table_latency"]
