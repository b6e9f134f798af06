"""`snas tune`: budget checks, resume and failures, and the latency budget.

One real tuning (two tiny searches on the bundled digits, run as one trial
and then resumed to two) is shared by the module; the failure paths
substitute `run_search` and run no search.
"""

import csv
import json
import os
import types

import numpy as np
import pytest
from latency_testing import hand_made_table
from testing_utils import TINY_RETRAIN

from snas_tf.config import RetrainConfig, load_config
from snas_tf.genotype import Genotype
from snas_tf.latency.cost import predict_latency
from snas_tf.latency.target import target_from_retrain_config
from snas_tf.models import build_child_network, count_parameters, multiply_adds
from snas_tf.search_space import SearchSpace
from snas_tf.trainers import cli, tune
from snas_tf.trainers.tune import run_tune
from snas_tf.tuning.budget import budget_score, measure, smallest_network

PRIMITIVES = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")
SEARCH = [
    "model.channels=4",
    "model.num_cells=1",
    "model.num_nodes=2",
    f"model.primitives=[{', '.join(PRIMITIVES)}]",
    "search.epochs=1",
    "search.batch_size=16",
    "data.dataset=digits",
    "data.image_size=8",
    "data.max_examples=64",
    "runtime.verbose=0",
]
RETRAIN = list(TINY_RETRAIN)
# Every edge of both 2-node cells kept with the largest op: no derivable
# genotype is bigger, so each trial meets a budget of its size.
LARGEST = Genotype(
    normal=[
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
    ],
    reduce=[
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
    ],
)


def _configs():
    return load_config([], SEARCH), load_config([], RETRAIN, RetrainConfig)


def _child(genotype, retrain):
    return build_child_network(
        genotype, auxiliary=False, **retrain.child_kwargs(10)
    )


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _fake_search(genotype, accuracy=0.5, error=None):
    """A stand-in for run_search: writes genotype.json, returns a summary."""
    calls = []

    def fake(config, model_dir):
        calls.append(config)
        if error is not None:
            raise error
        os.makedirs(model_dir, exist_ok=True)
        with open(os.path.join(model_dir, "genotype.json"), "w") as f:
            f.write(genotype.to_json())
        return {
            "genotype": genotype.to_string(),
            "last_epoch": {"val_child_accuracy": accuracy},
        }

    fake.calls = calls
    return fake


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A real tuning: 1 trial, then resumed to 2, counting the searches."""
    config, retrain = _configs()
    params, madds = measure(LARGEST, retrain, 10)
    model_dir = tmp_path_factory.mktemp("tune") / "run"
    real, searched, lines = tune.run_search, [], []

    def counting(cfg, trial_dir):
        searched.append(os.path.basename(trial_dir))
        return real(cfg, trial_dir)

    kwargs = dict(
        max_params=params,
        max_madds=madds,
        retrain_config=retrain,
        log=lines.append,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tune, "run_search", counting)
        first = run_tune(config, model_dir, max_trials=1, **kwargs)
        searched_first = list(searched)
        second = run_tune(config, model_dir, max_trials=2, **kwargs)
    return types.SimpleNamespace(
        model_dir=model_dir,
        config=config,
        retrain=retrain,
        budget=(params, madds),
        first=first,
        second=second,
        searched_first=searched_first,
        searched=searched,
        lines=lines,
    )


@pytest.mark.slow
def test_tuning_writes_outputs_and_best_child_meets_budget(tuned):
    d = tuned.model_dir
    for name in (
        "config.yaml",
        "tune.yaml",
        "trials.csv",
        "trials.md",
        "best_config.yaml",
        "best_genotype.json",
        "tuner/oracle.json",
        "trials/0/genotype.json",
        "trials/1/genotype.json",
    ):
        assert (d / name).is_file(), name
    rows = _read_csv(d / "trials.csv")
    assert [r["trial"] for r in rows] == ["0", "1"]
    assert [r["status"] for r in rows] == ["COMPLETED"] * 2
    assert all(r["within_budget"] == "True" for r in rows)
    assert (d / "trials.md").read_text().count("| COMPLETED |") == 2
    # The best child, rebuilt here, meets both budgets.
    genotype = Genotype.from_json((d / "best_genotype.json").read_text())
    child = _child(genotype, tuned.retrain)
    best = tuned.second["best"]
    assert count_parameters(child) == best["params"] <= tuned.budget[0]
    assert multiply_adds(child) == best["madds"] <= tuned.budget[1]
    assert best["score"] == max(float(r["score"]) for r in rows)
    # best_config.yaml is the base config with the best trial's values.
    best_config = load_config([d / "best_config.yaml"])
    assert best_config.model == tuned.config.model
    assert best_config.data == tuned.config.data
    s = best_config.search
    assert s.penalty_strength == pytest.approx(best["penalty_strength"])
    assert s.temperature_final == pytest.approx(best["temperature_final"])
    assert s.temperature_schedule == best["temperature_schedule"]
    assert 1e-5 <= s.penalty_strength <= 1e-1
    assert s.temperature_final < s.temperature_initial
    # Each trial's search ran with its own values.
    trial_config = load_config([d / "trials" / best["trial"] / "config.yaml"])
    assert trial_config == best_config
    assert any(line.startswith("Trial 1 done:") for line in tuned.lines)
    assert tuned.lines[-1] == f"Outputs written to {d}"


@pytest.mark.slow
def test_resume_keeps_completed_trials(tuned):
    assert tuned.searched_first == ["0"]
    assert tuned.searched == ["0", "1"]  # trial 0 was not searched again
    assert tuned.second["trials"][0] == tuned.first["trials"][0]


@pytest.mark.slow
def test_resume_with_other_settings_is_refused(tuned):
    with pytest.raises(ValueError, match=r"other \['max_params'\]"):
        run_tune(
            tuned.config,
            tuned.model_dir,
            max_params=tuned.budget[0] + 1,
            max_madds=tuned.budget[1],
            max_trials=3,
            retrain_config=tuned.retrain,
            log=lambda line: None,
        )
    assert len(_read_csv(tuned.model_dir / "trials.csv")) == 2


def test_an_interrupted_trial_runs_again(tmp_path, monkeypatch):
    config, retrain = _configs()
    dirs = []

    def interrupted(cfg, model_dir):
        dirs.append(os.path.basename(model_dir))
        raise KeyboardInterrupt

    kwargs = dict(max_params=10**9, max_trials=1, retrain_config=retrain)
    monkeypatch.setattr(tune, "run_search", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_tune(config, tmp_path, log=lambda line: None, **kwargs)
    works = _fake_search(LARGEST)
    monkeypatch.setattr(tune, "run_search", works)
    result = run_tune(config, tmp_path, log=lambda line: None, **kwargs)
    assert dirs == ["0"] and len(works.calls) == 1
    assert [r["status"] for r in result["trials"]] == ["COMPLETED"]
    assert works.calls[0] == load_config([tmp_path / "best_config.yaml"])


def test_budget_below_smallest_network_fails_before_writing(tmp_path):
    config, retrain = _configs()
    smallest = smallest_network(
        SearchSpace(PRIMITIVES, 2), "edge_all", retrain, 10
    )
    for budget, text in (
        (dict(max_params=smallest["params"] - 1), "parameters at 3 cells"),
        (dict(max_madds=smallest["madds"] - 1), "multiply-adds per 8x8"),
    ):
        with pytest.raises(ValueError, match="smallest derivable") as e:
            run_tune(config, tmp_path / "run", retrain_config=retrain, **budget)
        assert text in str(e.value)
    assert not (tmp_path / "run").exists()


def test_every_trial_failed_raises_with_the_first_message(
    tmp_path, monkeypatch
):
    config, retrain = _configs()
    fake = _fake_search(LARGEST, error=OSError("disk on fire"))
    monkeypatch.setattr(tune, "run_search", fake)
    with pytest.raises(RuntimeError, match="Every trial failed.*disk on fire"):
        run_tune(
            config,
            tmp_path,
            max_params=10**9,
            max_trials=2,
            retrain_config=retrain,
            log=lambda line: None,
        )
    rows = _read_csv(tmp_path / "trials.csv")
    assert [r["status"] for r in rows] == ["FAILED", "FAILED"]
    assert rows[0]["error"] == "OSError: disk on fire"
    assert not (tmp_path / "best_genotype.json").exists()


def test_consecutive_failures_stop_the_tuning(tmp_path, monkeypatch):
    config, retrain = _configs()
    fake = _fake_search(LARGEST, error=OSError("disk on fire"))
    monkeypatch.setattr(tune, "run_search", fake)
    with pytest.raises(RuntimeError, match="3 trials in a row failed"):
        run_tune(
            config,
            tmp_path,
            max_params=10**9,
            max_trials=6,
            retrain_config=retrain,
            log=lambda line: None,
        )
    assert len(fake.calls) == 3


def test_some_failed_trials_are_reported_and_skipped(tmp_path, monkeypatch):
    config, retrain = _configs()
    works = _fake_search(LARGEST, 0.75)

    def flaky(cfg, model_dir):
        if not works.calls:  # the first trial fails
            works.calls.append(cfg)
            raise FloatingPointError("loss is nan")
        return works(cfg, model_dir)

    monkeypatch.setattr(tune, "run_search", flaky)
    lines = []
    result = run_tune(
        config,
        tmp_path,
        max_params=10**9,
        max_trials=2,
        retrain_config=retrain,
        log=lines.append,
    )
    assert [r["status"] for r in result["trials"]] == ["FAILED", "COMPLETED"]
    assert result["best"]["trial"] == "1"
    assert result["best"]["score"] == pytest.approx(0.75)
    assert lines[0].startswith("Trial 0 FAILED: η=")
    assert lines[0].endswith(": FloatingPointError: loss is nan")
    assert any(
        line.startswith("Warning: 1 of 2 trials failed") for line in lines
    )
    assert (tmp_path / "best_genotype.json").is_file()
    assert (
        "- trial 0: FloatingPointError: loss is nan"
        in (tmp_path / "trials.md").read_text()
    )


def test_no_trial_within_budget_writes_the_table_and_fails(
    tmp_path, monkeypatch
):
    config, retrain = _configs()
    monkeypatch.setattr(tune, "run_search", _fake_search(LARGEST, 0.9))
    params = measure(LARGEST, retrain, 10)[0]
    lines = []
    with pytest.raises(RuntimeError, match="No trial met the budget"):
        run_tune(
            config,
            tmp_path,
            max_params=params - 1,
            max_trials=2,
            algorithm="random",
            retrain_config=retrain,
            log=lines.append,
        )
    rows = _read_csv(tmp_path / "trials.csv")
    assert [r["within_budget"] for r in rows] == ["False", "False"]
    assert float(rows[0]["score"]) == pytest.approx(-1 / (params - 1))
    assert "OVER BUDGET" in lines[0]
    table = (tmp_path / "trials.md").read_text()
    assert "**no**" in table and "No trial is within the budget" in table
    assert not (tmp_path / "best_genotype.json").exists()
    assert json.loads((tmp_path / "tuner" / "oracle.json").read_text())


def test_cli_budget_below_minimum_is_a_one_line_error(tmp_path, capsys):
    code = cli.main(
        ["tune", "--model-dir", str(tmp_path / "run"), "--max-params", "10"]
        + [f"--override={o}" for o in SEARCH]
        + [f"--retrain-override={o}" for o in RETRAIN]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "--max-params 10 is below the smallest derivable network" in err
    assert not (tmp_path / "run").exists()


# --max-latency-ms: a latency budget scored by a hand-made latency table
# (made-up timings) and checked by timing the best child.


def test_latency_is_one_more_budget_of_the_score():
    assert budget_score(0.7, 1, 1, latency_ms=2.0, max_latency_ms=4.0) == (
        0.7,
        True,
    )
    score, within = budget_score(
        0.7, 1, 1, max_params=2, latency_ms=6.0, max_latency_ms=4.0
    )
    assert not within and score == pytest.approx(-0.5)


@pytest.fixture
def table(tmp_path):
    config, retrain = _configs()
    target = target_from_retrain_config(retrain, PRIMITIVES, 2)
    path = tmp_path / "table.json"
    table = hand_made_table(target, path)
    ms = predict_latency(table, target, LARGEST)["total_us"] / 1e3
    return path, table, ms


def test_a_latency_budget_scores_the_predicted_latency(
    tmp_path, monkeypatch, table
):
    path, _, largest_ms = table
    config, retrain = _configs()
    monkeypatch.setattr(tune, "run_search", _fake_search(LARGEST, 0.6))
    lines = []
    result = run_tune(
        config,
        tmp_path / "run",
        max_trials=1,
        retrain_config=retrain,
        log=lines.append,
        max_latency_ms=largest_ms + 0.001,
        latency_table=path,
    )
    best = result["best"]
    assert best["latency_ms"] == pytest.approx(largest_ms)
    assert best["within_budget"] and best["score"] == pytest.approx(0.6)
    rows = _read_csv(tmp_path / "run" / "trials.csv")
    assert float(rows[0]["latency_ms"]) == pytest.approx(largest_ms)
    assert "latency ms" in (tmp_path / "run" / "trials.md").read_text()
    saved = json.loads((tmp_path / "run" / "best_latency.json").read_text())
    # A hand-made table is no measurement of this machine: not re-timed.
    assert saved["predicted_ms"] == pytest.approx(largest_ms)
    assert saved["measured_ms"] is None
    assert any("ms predicted" in line for line in lines)


def test_over_the_latency_budget_no_trial_is_best(tmp_path, monkeypatch, table):
    path, _, largest_ms = table
    config, retrain = _configs()
    monkeypatch.setattr(tune, "run_search", _fake_search(LARGEST, 0.9))
    with pytest.raises(RuntimeError, match="No trial met the budget"):
        run_tune(
            config,
            tmp_path / "run",
            max_trials=1,
            retrain_config=retrain,
            log=lambda line: None,
            max_latency_ms=largest_ms / 2,
            latency_table=path,
        )
    rows = _read_csv(tmp_path / "run" / "trials.csv")
    assert float(rows[0]["score"]) == pytest.approx(-1.0, rel=1e-4)


def test_the_best_child_is_timed_as_the_table_was(table):
    _, made_up, largest_ms = table
    config, retrain = _configs()
    made_up.runtime.update(source="measured", runs=2, warmup=1)
    got = tune.verify_latency(LARGEST, retrain, 10, made_up, largest_ms)
    assert got["predicted_ms"] == largest_ms
    assert np.isfinite(got["measured_ms"]) and got["measured_ms"] > 0
    assert (got["threads"], got["format"]) == (1, "fp32")


def _tune_argv(tmp_path, *extra):
    return [
        "tune",
        "--override=model.num_nodes=2",
        f"--override=model.primitives=[{', '.join(PRIMITIVES)}]",
        "--retrain-override=child.num_layers=3",
        "--retrain-override=child.channels=4",
        "--retrain-override=child.auxiliary=false",
        "--retrain-override=data.dataset=digits",
        "--retrain-override=data.image_size=8",
        f"--model-dir={tmp_path / 'run'}",
        *extra,
    ]


def test_cli_refuses_a_latency_budget_without_a_usable_table(
    tmp_path, capsys, table
):
    path = table[0]
    for extra, named in (
        (["--max-latency-ms=5"], "--max-latency-ms needs --latency-table"),
        (
            ["--max-latency-ms=5", f"--latency-table={path}"]
            + ["--retrain-override=child.channels=8"],
            "target.channels is 4",
        ),
    ):
        assert cli.main(_tune_argv(tmp_path, *extra)) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and named in lines[0], lines
    assert not (tmp_path / "run").exists()
