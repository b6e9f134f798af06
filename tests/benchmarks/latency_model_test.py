"""`benchmarks/latency_model.py --quick` on a two-op 8x8 target with a
hand-made table: its output, its resume and its refusals (timings are
checked for form, never for value)."""

import importlib.util
import json
import math
import pathlib

import pytest
from latency_testing import TINY_TARGET, TINY_TARGET_OVERRIDES, hand_made_table

from snas_tf.latency.calibration import part_count
from snas_tf.latency.cost import predict_latency
from snas_tf.latency.table import load_table

REPO = pathlib.Path(__file__).resolve().parents[2]

_SPEC = importlib.util.spec_from_file_location(
    "latency_model", REPO / "benchmarks" / "latency_model.py"
)
latency_model = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(latency_model)


def _argv(table, out, *extra):
    argv = ["--quick", f"--table={table}", f"--out={out}"]
    argv += [f"--config={REPO / 'configs/digits_retrain.yaml'}"]
    argv += [f"--override={o}" for o in TINY_TARGET_OVERRIDES]
    return argv + list(extra)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calib")
    table = hand_made_table(TINY_TARGET, tmp / "t.json")
    argv = _argv(table.path, tmp / "r.json", "--write-calibrated")
    assert latency_model.main(argv) == 0
    return table, tmp


def test_quick_run_predicts_and_measures_every_genotype(finished):
    table, tmp = finished
    result = json.loads((tmp / "r.json").read_text())
    assert result["n"] == 3 and len(result["rows"]) == 3
    genotypes = latency_model.sample_genotypes(TINY_TARGET.search_space, 3, 0)
    for genotype, row in zip(genotypes, result["rows"], strict=True):
        assert row["genotype"] == genotype.to_string()
        want = predict_latency(table, TINY_TARGET, genotype)["total_us"]
        assert row["fp32"]["predicted_ms"] == pytest.approx(want / 1e3)
        timings = row["fp32"]["timings_ms"]
        assert len(timings) == 2 and all(t > 0 for t in timings)
        assert row["fp32"]["measured_ms"] == min(timings)
        assert row["madds"] > 0 and row["load_1min"] >= 0
        assert row["parts"] == part_count(TINY_TARGET, genotype)
    summary = result["summary"]["fp32"]
    for key in ("table", "table_scaled_loo", "madds_scaled_loo"):
        assert math.isfinite(summary[key]["mape_pct"]), key
    # The calibrated table: the raw timings and the scale fitted on all.
    calibrated = load_table(tmp / "r.fp32-table.json")
    assert calibrated.entries == table.entries
    fit = calibrated.calibration["fit"]
    want = (
        summary["parts_all"]
        if fit == "table_parts_loo"
        else (
            summary["scale_all"][0],
            0.0,
        )
    )
    assert calibrated.scale == pytest.approx(want[0])
    assert calibrated.per_part_us == pytest.approx(want[1] * 1e3)
    assert calibrated.calibration["loo_mape_pct"] == min(
        summary["table_scaled_loo"]["mape_pct"],
        summary["table_parts_loo"]["mape_pct"],
    )
    assert result["calibrated_tables"] == {
        "fp32": str(tmp / "r.fp32-table.json")
    }
    md = (tmp / "r.md").read_text()
    assert len(result["load_1min_rows"]) == 3
    assert "a * madds (LOO)" in md and md.count("| fp32 |") == 6 + 3


def test_an_interrupted_run_resumes_from_its_state(finished):
    table, tmp = finished
    state = json.loads((tmp / "r.state.json").read_text())
    # As if stopped after one genotype, whose row is marked so that a
    # measurement again would show.
    state["rows"] = state["rows"][:1]
    state["rows"][0]["fp32"]["timings_ms"] = [123.0, 124.0]
    (tmp / "r2.state.json").write_text(json.dumps(state))
    assert latency_model.main(_argv(table.path, tmp / "r2.json")) == 0
    rows = json.loads((tmp / "r2.json").read_text())["rows"]
    assert len(rows) == 3 and rows[0]["fp32"]["timings_ms"] == [123.0, 124.0]
    assert rows[1]["fp32"]["timings_ms"][0] < 123.0


def test_a_state_of_other_settings_is_refused(finished, capsys):
    table, tmp = finished
    code = latency_model.main(
        _argv(table.path, tmp / "r.json", "--seed=1", "--genotypes=4")
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "r.state.json" in err


def test_a_table_of_another_target_is_refused(tmp_path, capsys):
    table = hand_made_table(TINY_TARGET, tmp_path / "t.json")
    argv = _argv(table.path, tmp_path / "r.json", "--override=child.channels=8")
    assert latency_model.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "target.channels is 4" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r.state.json").exists()


def test_sampled_genotypes_keep_two_distinct_real_edges_per_node():
    space = TINY_TARGET.search_space
    for genotype in latency_model.sample_genotypes(space, 20, 3):
        genotype.validate(space)
        for node in (*genotype.normal, *genotype.reduce):
            assert len({s for _, s in node}) == 2
            assert all(op != "none" for op, _ in node)
