"""The `snas` console script end to end, each step its own process:
search -> retrain the searched genotype -> export -> plot, on tiny digits
configs, then `snas demo` on the same tiny configs in one process."""

import json
import os

import pytest
import yaml
from testing_utils import retrained_accuracy, run_snas

from snas_tf.export.common import size_bytes
from snas_tf.genotype import get_genotype

SEARCH = {
    "model": {
        "channels": 4,
        "num_cells": 3,
        "num_nodes": 2,
        "primitives": ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"],
    },
    "search": {"epochs": 2, "batch_size": 16},
    "data": {"dataset": "digits", "image_size": 8, "max_examples": 96},
    "runtime": {"verbose": 2},
}
RETRAIN = {
    "child": {"channels": 4, "num_layers": 3, "auxiliary": False},
    "train": {"epochs": 1, "batch_size": 8},
    "data": {"dataset": "digits", "image_size": 8, "max_examples": 48},
    "runtime": {"verbose": 2},
}


def _snas(*argv):
    done = run_snas(argv)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture
def configs(tmp_path):
    paths = {}
    for name, data in (("search", SEARCH), ("retrain", RETRAIN)):
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(data))
    return paths


@pytest.mark.slow
def test_search_retrain_export_plot_as_separate_processes(tmp_path, configs):
    search, retrain, out = (tmp_path / n for n in ("s", "r", "e"))
    stdout = _snas(
        "search", "--config", configs["search"], "--model-dir", search
    )
    assert stdout.strip().splitlines()[-1] == f"Outputs written to {search}"
    genotype = get_genotype(str(search / "genotype.json"))
    assert f"Genotype: {genotype.to_string()}" in stdout

    stdout = _snas(
        "retrain",
        "--config",
        configs["retrain"],
        "--genotype",
        search / "genotype.json",
        "--model-dir",
        retrain,
    )
    assert stdout.strip().splitlines()[-1] == f"Outputs written to {retrain}"
    assert get_genotype(str(retrain / "genotype.json")) == genotype
    assert (retrain / "model.keras").is_file()

    _snas(
        "export",
        "--model-dir",
        retrain,
        "--out",
        out,
        "--formats",
        "saved_model",
        "tflite_int8",
        "onnx",
        "--runs",
        2,
    )
    report = json.loads((out / "report.json").read_text())
    assert [r["format"] for r in report["artifacts"]] == [
        "saved_model",
        "tflite_int8",
        "onnx",
    ]
    assert all(r["passed"] for r in report["artifacts"])
    for row in report["artifacts"]:
        assert size_bytes(out / row["path"]) == row["bytes"] > 0

    stdout = _snas("plot", "--model-dir", search)
    assert stdout.strip().splitlines()[-1].startswith("Plots written to")
    pngs = sorted(os.listdir(search / "plots"))
    assert "alpha.png" in pngs and "cell_normal.png" in pngs


@pytest.mark.slow
def test_demo_runs_every_stage_and_reruns(tmp_path, configs):
    from snas_tf.trainers.demo import run_demo

    args = (tmp_path / "demo", [configs["search"]], [configs["retrain"]])
    summary = run_demo(*args, progress=None)
    text = (tmp_path / "demo" / "summary.md").read_text()
    assert summary["genotype"] in text
    formats = [r["format"] for r in summary["artifacts"]]
    assert formats == ["saved_model", "tflite_int8", "onnx"]
    assert (tmp_path / "demo" / "export" / "serving" / "snas" / "1").is_dir()
    # The reported accuracy is the shipped model's, computed again here.
    assert summary["retrained_accuracy"] == pytest.approx(
        retrained_accuracy(tmp_path / "demo" / "retrain"), abs=1e-6
    )
    # Re-running in the same directory does not fail: the finished search
    # and retrain are taken over, the export gets a new serving version.
    again = run_demo(*args, progress=None)
    assert again["genotype"] == summary["genotype"]
    assert (tmp_path / "demo" / "export" / "serving" / "snas" / "2").is_dir()
