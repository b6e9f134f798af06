"""Tests for `run_plot` and `snas plot` on synthetic model_dirs (no real
search: the files are written as `snas search` / `snas retrain` do)."""

import json
import os

import numpy as np
import pytest

from snas_tf.genotype import get_genotype
from snas_tf.search_space import PRIMITIVES, SearchSpace
from snas_tf.trainers import cli
from snas_tf.trainers.plot import run_plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GENOTYPE = get_genotype("SNAS_moderate")


def _alpha(rng):
    space = SearchSpace()
    e = np.exp(rng.normal(size=(space.num_edges, space.num_ops)))
    return (e / e.sum(axis=-1, keepdims=True)).tolist()


def _search_dir(path, num_epochs=2):
    rng = np.random.default_rng(0)
    epochs = [
        {
            "epoch": e,
            "genotype": str(GENOTYPE),
            "temperature": 1.0 - 0.5 * e,
            "entropy_normal": 2.0 - 0.1 * e,
            "entropy_reduce": 2.0,
            "expected_size": 1e6,
            "expected_flops": 1e8,
            "expected_mac": 5e7,
            "loss": 2.0,
            "accuracy": 0.3,
            "val_accuracy": 0.3,
            "val_child_accuracy": 0.2,
            "alpha_normal": _alpha(rng),
            "alpha_reduce": _alpha(rng),
        }
        for e in range(num_epochs)
    ]
    history = {
        "primitives": list(PRIMITIVES),
        "num_nodes": 4,
        "epochs": epochs,
        "history": {},
    }
    path.mkdir(exist_ok=True)
    (path / "history.json").write_text(json.dumps(history))
    (path / "genotype.json").write_text(GENOTYPE.to_json())
    return path


def _retrain_dir(path):
    epochs = [
        {
            "epoch": e,
            "loss": 1.0 / (e + 1),
            "accuracy": 0.5,
            "val_accuracy": 0.4,
        }
        for e in range(2)
    ]
    path.mkdir(exist_ok=True)
    (path / "history.json").write_text(json.dumps({"epochs": epochs}))
    (path / "genotype.json").write_text(GENOTYPE.to_json())
    return path


def _assert_pngs(paths):
    for path in paths:
        with open(path, "rb") as f:
            assert f.read(8) == PNG_MAGIC, path


def test_search_dir_gets_every_plot(tmp_path):
    model_dir = _search_dir(tmp_path / "search")
    paths = run_plot(str(model_dir))
    names = [os.path.basename(p) for p in paths]
    assert names == [
        "cell_normal.png",
        "cell_reduce.png",
        "curves.png",
        "alpha.png",
        "alpha_epochs.png",
    ]
    assert all(os.path.dirname(p) == str(model_dir / "plots") for p in paths)
    _assert_pngs(paths)
    assert sorted(os.listdir(model_dir / "plots")) == sorted(names)


def test_retrain_dir_gets_cells_and_curves(tmp_path):
    model_dir = _retrain_dir(tmp_path / "retrain")
    paths = run_plot(model_dir)
    names = [os.path.basename(p) for p in paths]
    assert names == ["cell_normal.png", "cell_reduce.png", "curves.png"]
    _assert_pngs(paths)


def test_missing_dir_names_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match="nope.*not found"):
        run_plot(missing)


def test_dir_without_outputs_says_what_it_expected(tmp_path):
    with pytest.raises(ValueError) as info:
        run_plot(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "genotype.json" in message and "history.json" in message


def test_malformed_history_writes_nothing(tmp_path):
    model_dir = _retrain_dir(tmp_path / "retrain")
    (model_dir / "history.json").write_text('{"epochs": []}')
    with pytest.raises(ValueError, match="history.json has no epochs"):
        run_plot(model_dir)
    assert not (model_dir / "plots").exists()


def test_cli_prints_each_path_and_the_plots_dir(tmp_path, capsys):
    model_dir = _retrain_dir(tmp_path / "retrain")
    assert cli.main(["plot", "--model-dir", str(model_dir)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    plots_dir = os.path.join(str(model_dir), "plots")
    assert lines[-1] == f"Plots written to {plots_dir}"
    assert lines[:-1] == [
        os.path.join(plots_dir, name)
        for name in ("cell_normal.png", "cell_reduce.png", "curves.png")
    ]


def test_cli_missing_dir_is_a_one_line_error(tmp_path, capsys):
    missing = str(tmp_path / "nope")
    assert cli.main(["plot", "--model-dir", missing]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("snas plot: error:") and missing in err
