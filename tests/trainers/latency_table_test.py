"""`snas latency-table` end to end on a one-op space at 8x8 (timings are
checked for form, never for value), its resume, `--export-ops` and
`--import`, and the latency table's use by `snas search` and
`snas summary`."""

import csv
import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from latency_testing import (
    TINY_TARGET,
    TINY_TARGET_OVERRIDES,
    hand_made_table,
)
from testing_utils import SNAS

from snas_tf.config import RetrainConfig, load_config, save_config
from snas_tf.export.tflite import make_interpreter
from snas_tf.latency.entries import required_entries
from snas_tf.latency.table import check_table, load_table
from snas_tf.latency.target import target_from_retrain_config
from snas_tf.trainers import cli, latency_table

# One reduction cell of one node, 4 channels at 8x8, ops {none, skip}.
MICRO = [
    "--config=configs/digits_retrain.yaml",
    "--override=child.num_layers=1",
    "--override=child.channels=4",
    "--override=data.image_size=8",
    "--primitives",
    "none",
    "skip_connect",
    "--num-nodes=1",
]


def _micro_target():
    config = load_config(
        ["configs/digits_retrain.yaml"],
        ["child.num_layers=1", "child.channels=4", "data.image_size=8"],
        RetrainConfig,
    )
    return target_from_retrain_config(config, ("none", "skip_connect"), 1)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("table") / "micro.json"
    argv = ["latency-table", *MICRO, f"--out={out}", "--runs=2"]
    assert cli.main([*argv, "--warmup=1"]) == 0
    # A rerun over the finished table (an existing file) builds it again,
    # here by the CPU clock.
    out.write_text("{}")
    assert cli.main([*argv, "--warmup=1", "--clock=cpu"]) == 0
    return out


def test_the_built_table_holds_every_entry_and_its_metadata(built):
    # `--out` names the table file, which a rerun finds in place.
    assert built.is_file()
    target = _micro_target()
    table = check_table(load_table(built), target)
    assert set(table.entries) == set(required_entries(target))
    kinds = {e["kind"] for e in table.entries.values()}
    assert kinds == {"stem", "preprocess", "op", "add", "zeros", "head"}
    for entry in table.entries.values():
        assert np.isfinite(entry["latency_us"]) and entry["latency_us"] >= 0
    runtime = table.runtime
    assert runtime["threads"] == 1 and runtime["runs"] == 2
    assert runtime["clock"] == "cpu"
    assert runtime["format"] == "fp32" and runtime["source"] == "measured"
    assert runtime["name"] in ("ai_edge_litert", "tf.lite")
    for key in ("version", "cpu", "date"):
        assert runtime[key], key
    assert table.target["reduction_cells"] == [0]
    assert not os.path.exists(f"{built}.partial")


def test_an_interrupted_build_resumes_where_it_stopped(tmp_path, monkeypatch):
    """The first build is killed at its third timing; the rerun times only
    the entries it had not (fake conversion and timing: no TFLite)."""
    from snas_tf.export import op_latency

    timed = []

    def fake_time(path, threads, runs, warmup, clock):
        assert clock == "cpu"
        if len(timed) == 2 and not os.environ.get("RESUMED"):
            raise KeyboardInterrupt
        timed.append(path)
        return 10.0 * len(timed)

    monkeypatch.setattr(latency_table, "_convert", lambda entry, fmt: b"")
    monkeypatch.setattr(op_latency, "time_op_model", fake_time)
    out = tmp_path / "t.json"
    with pytest.raises(KeyboardInterrupt):
        latency_table.build_table(TINY_TARGET, out, verbose=False, clock="cpu")
    assert not out.exists()
    kept = [json.loads(x) for x in open(f"{out}.partial")][1:]
    shutil.copy(f"{out}.partial", f"{out}.partial.kept")
    assert [r["latency_us"] for r in kept] == [10.0, 20.0]
    monkeypatch.setenv("RESUMED", "1")
    table = latency_table.build_table(
        TINY_TARGET, out, verbose=False, clock="cpu"
    )
    assert table.runtime["clock"] == "cpu"
    entries = list(required_entries(TINY_TARGET))
    assert len(timed) == len(entries)  # 2 before the kill, the rest after
    assert [table.latency_us(i) for i in entries[:2]] == [10.0, 20.0]
    assert not os.path.exists(f"{out}.partial")
    # Other settings do not mix into a resumed build.
    settings = json.loads(open(f"{out}.partial.kept").readline())
    settings["settings"]["threads"] = 4
    (tmp_path / "u.json.partial").write_text(json.dumps(settings) + "\n")
    with pytest.raises(ValueError, match="with threads=4, not 1"):
        latency_table.build_table(TINY_TARGET, tmp_path / "u.json", clock="cpu")
    # Timings of another clock neither.
    settings["settings"].update(threads=1, clock="wall")
    (tmp_path / "u.json.partial").write_text(json.dumps(settings) + "\n")
    with pytest.raises(ValueError, match="with clock='wall', not 'cpu'"):
        latency_table.build_table(TINY_TARGET, tmp_path / "u.json", clock="cpu")
    # The CPU clock times one thread only.
    with pytest.raises(ValueError, match="needs 1 thread, got 2"):
        latency_table.build_table(
            TINY_TARGET, tmp_path / "v.json", 2, clock="cpu"
        )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("ops")
    assert cli.main(["latency-table", *MICRO, f"--export-ops={out}"]) == 0
    return out


def test_export_ops_writes_a_model_per_entry_and_a_manifest(exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    target = _micro_target()
    assert manifest["target"] == target.to_dict()
    assert manifest["format"] == "fp32"
    assert set(manifest["entries"]) == set(required_entries(target))
    for entry_id, entry in manifest["entries"].items():
        assert entry["file"] == f"{entry_id}.tflite"
        interpreter = make_interpreter(exported / entry["file"])
        interpreter.allocate_tensors()
        shapes = [list(d["shape"]) for d in interpreter.get_input_details()]
        assert all(s[0] == 1 for s in shapes)
        if entry["kind"] == "op":
            side, c = entry["side"], entry["channels"]
            assert shapes == [[1, side, side, c]]


def test_int8_op_models_take_int8_inputs(tmp_path):
    argv = ["latency-table", *MICRO, "--format=int8"]
    assert cli.main([*argv, f"--export-ops={tmp_path}"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == "int8"
    entry = next(e for e in manifest["entries"].values() if e["kind"] == "op")
    interpreter = make_interpreter(tmp_path / entry["file"])
    assert interpreter.get_input_details()[0]["dtype"] == np.int8


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_timings_of_another_device_import_into_a_table(
    exported, tmp_path, suffix
):
    ids = list(json.loads((exported / "manifest.json").read_text())["entries"])
    timings = {entry_id: 100.0 + i for i, entry_id in enumerate(ids)}
    path = tmp_path / f"phone{suffix}"
    if suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "latency_us"])
            writer.writerows(timings.items())
    else:
        path.write_text(json.dumps({"latency_us": timings}))
    out = tmp_path / "phone_table.json"
    argv = ["latency-table", *MICRO, f"--import={path}", f"--out={out}"]
    assert cli.main([*argv, "--device=pixel"]) == 0
    table = check_table(load_table(out), _micro_target())
    assert {i: table.latency_us(i) for i in ids} == timings
    assert table.runtime["cpu"] == "pixel"
    assert table.runtime["name"] == "imported"


def _one_line_error(capsys, argv, named):
    assert cli.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], lines
    return lines[0]


def test_an_import_missing_or_adding_an_id_is_refused(
    exported, tmp_path, capsys
):
    ids = list(json.loads((exported / "manifest.json").read_text())["entries"])
    path = tmp_path / "phone.csv"
    path.write_text("id,latency_us\n" + "".join(f"{i},5\n" for i in ids[1:]))
    out = tmp_path / "t.json"
    argv = ["latency-table", *MICRO, f"--import={path}", f"--out={out}"]
    _one_line_error(capsys, argv, f"missing entry '{ids[0]}'")
    path.write_text("id,latency_us\nop-bogus,5\n")
    _one_line_error(capsys, argv, "'op-bogus' is no entry")
    assert not out.exists()


def _search_argv(tmp_path, table, target_config):
    return [
        "search",
        "--config=configs/digits_search.yaml",
        "--override=model.channels=4",
        "--override=model.num_cells=2",
        "--override=model.num_nodes=2",
        "--override=model.primitives=[none, skip_connect, sep_conv_3x3]",
        "--override=search.resource=latency",
        f"--override=search.latency_table={table}",
        f"--override=search.latency_target_config={target_config}",
        f"--model-dir={tmp_path / 'run'}",
    ]


@pytest.fixture
def target_config(tmp_path):
    path = tmp_path / "target.yaml"
    config = load_config([], TINY_TARGET_OVERRIDES, RetrainConfig)
    save_config(config, path)
    return path


def test_the_target_config_gives_the_tiny_target(target_config):
    config = load_config([target_config], (), RetrainConfig)
    target = target_from_retrain_config(config, TINY_TARGET.primitives, 2)
    assert target == TINY_TARGET


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda d: d["target"].update(image_size=16), "target.image_size"),
        (
            lambda d: d["entries"].pop("add-c4-h8"),
            "missing entry 'add-c4-h8'",
        ),
        (
            lambda d: d["entries"]["add-c4-h8"].update(latency_us=-3),
            "'add-c4-h8' has latency_us -3",
        ),
        (lambda d: d["runtime"].update(format="fp16"), "runtime.format"),
    ],
)
def test_search_refuses_a_bad_table_before_anything_runs(
    tmp_path, target_config, capsys, edit, named
):
    path = tmp_path / "table.json"
    hand_made_table(path=path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    _one_line_error(capsys, _search_argv(tmp_path, path, target_config), named)
    assert not (tmp_path / "run").exists()


def test_search_without_a_table_names_the_missing_key(tmp_path, capsys):
    argv = [
        "search",
        "--override=search.resource=latency",
        f"--model-dir={tmp_path / 'run'}",
    ]
    _one_line_error(capsys, argv, "search.latency_table is null")


def test_a_bad_table_is_refused_before_tensorflow(tmp_path, target_config):
    """The console script, with a `tensorflow` first on the path that
    fails to import: the refusal comes before TensorFlow."""
    fake = tmp_path / "fake_tf" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('TF imported')\n")
    path = tmp_path / "table.json"
    table = hand_made_table(path=path)
    data = table.to_dict()
    data["entries"].pop("add-c4-h8")
    path.write_text(json.dumps(data))
    env = dict(os.environ, PYTHONPATH=str(fake.parent))
    result = subprocess.run(
        [SNAS, *_search_argv(tmp_path, path, target_config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing entry 'add-c4-h8'" in lines[0]


def test_summary_predicts_a_genotypes_latency(tmp_path, capsys):
    path = tmp_path / "table.json"
    hand_made_table(path=path)
    genotype = (
        "normal=sep_conv_3x3:0,skip_connect:1|sep_conv_3x3:2;"
        "reduce=sep_conv_3x3:0,sep_conv_3x3:1|skip_connect:2"
    )
    argv = ["summary", f"--genotype={genotype}", f"--latency-table={path}"]
    assert cli.main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["channels"] == 4 and result["image_size"] == 8
    latency = result["latency"]
    assert latency["total_us"] == pytest.approx(
        latency["stem_us"] + sum(latency["cells_us"]) + latency["head_us"]
    )
    assert cli.main(argv) == 0
    assert "predicted latency: " in capsys.readouterr().out
    _one_line_error(
        capsys, [*argv, "--channels=8"], "--channels 8 differs from"
    )
