"""`snas export --latency-table`: the table's prediction next to the TFLite
file timed as the table was, and the refusals before any work (timings
are checked for form, never for value)."""

import dataclasses
import json
import math

import pytest
from latency_testing import TINY_TARGET, hand_made_table

from snas_tf.config import RetrainConfig, load_config
from snas_tf.export import common, exporter
from snas_tf.latency.cost import predict_latency
from snas_tf.latency.target import target_from_retrain_config
from snas_tf.trainers import cli

# A fresh 2-cell, 4-channel network on 8x8 digits.
FRESH = [
    "child.channels=4",
    "child.num_layers=2",
    "data.dataset=digits",
    "data.image_size=8",
    "data.max_examples=400",
]


def _fresh_table(path, source="measured", fmt="fp32"):
    """A hand-made table of the FRESH network, its runtime marked as timed
    here (`source`) with 2 runs after 1 warm-up."""
    target = target_from_retrain_config(load_config([], FRESH, RetrainConfig))
    table = hand_made_table(target, fmt=fmt)
    runtime = {**table.runtime, "source": source, "runs": 2, "warmup": 1}
    table = dataclasses.replace(table, runtime=runtime, path=str(path))
    table.save(path)
    return table, target


@pytest.mark.parametrize("source", ["measured", "phone"])
def test_the_report_holds_the_prediction_and_the_measurement(
    tmp_path, monkeypatch, source
):
    monkeypatch.setattr(exporter, "FIXED_BATCH", 2)
    monkeypatch.setattr(exporter, "HELD_OUT_BATCH", 2)
    table, target = _fresh_table(tmp_path / "t.json", source)
    src = exporter.load_source(genotype="SNAS_moderate", overrides=FRESH)
    out = tmp_path / "out"
    report = exporter.export_model(
        src,
        out,
        ["tflite_fp32"],
        latency_runs=1,
        progress=None,
        latency_table=table,
    )
    got = report["latency_table"]
    want = predict_latency(table, target, "SNAS_moderate")["total_us"] / 1e3
    assert got["predicted_ms"] == pytest.approx(want)
    assert (got["format"], got["threads"], got["runs"]) == ("fp32", 1, 2)
    assert (got["clock"], got["scale"]) == ("wall", 1.0)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["latency_table"] == got
    md = (out / "report.md").read_text()
    assert f"predicted {want:.2f} ms" in md
    if source == "measured":
        assert math.isfinite(got["measured_ms"]) and got["measured_ms"] > 0
        error = (got["predicted_ms"] / got["measured_ms"] - 1) * 100
        assert got["error_pct"] == pytest.approx(error)
        assert f"measured here {got['measured_ms']:.2f} ms" in md
    else:
        # A table timed on another device: nothing here to compare with.
        assert got["measured_ms"] is None and got["error_pct"] is None
        assert "another device" in md


def test_a_table_of_another_network_is_refused_before_any_work(
    tmp_path, monkeypatch
):
    def no_work(*_):
        raise AssertionError("export_model worked before checking the table")

    monkeypatch.setattr(exporter, "_batches", no_work)
    monkeypatch.setattr(common, "finish_publish", no_work)
    table = hand_made_table(TINY_TARGET, tmp_path / "tiny.json")
    src = exporter.load_source(genotype="SNAS_moderate", overrides=FRESH)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"target\.num_layers is 3"):
        exporter.export_model(src, out, ["tflite_fp32"], latency_table=table)
    assert not out.exists()


@pytest.mark.parametrize(
    "make, formats, named",
    [
        # TINY_TARGET has 3 cells, the FRESH network 2.
        (lambda p: hand_made_table(TINY_TARGET, p), "tflite_fp32", "target."),
        (
            lambda p: _fresh_table(p, fmt="int8"),
            "tflite_fp32",
            "add tflite_int8 to --formats",
        ),
        (lambda p: p.write_text("{}"), "tflite_fp32", "format_version"),
    ],
)
def test_cli_bad_latency_table_exits_2_with_one_line(
    tmp_path, capsys, make, formats, named
):
    path = tmp_path / "table.json"
    make(path)
    out = tmp_path / "out"
    argv = ["export", "--genotype", "SNAS_moderate", "--out", str(out)]
    argv += [f"--override={o}" for o in FRESH]
    argv += ["--formats", formats, "--latency-table", str(path)]
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert named in err
    assert not out.exists()


def test_the_clock_is_checked_before_any_timing(tmp_path):
    from snas_tf.export.op_latency import time_op_model

    missing = tmp_path / "none.tflite"  # never opened: refused before
    with pytest.raises(ValueError, match="Unknown clock 'gpu'"):
        time_op_model(missing, clock="gpu")
    with pytest.raises(ValueError, match="needs 1 thread, got 2"):
        time_op_model(missing, threads=2, clock="cpu")
