"""Tests of `snas export`: every format written, verified, published."""

import json
import os

import pytest

from snas_tf.config import RetrainConfig, load_config
from snas_tf.export import common, exporter, savedmodel, serving, tflite
from snas_tf.trainers import cli
from snas_tf.trainers.retrain import run_retrain

TINY = [
    "child.channels=4",
    "child.num_layers=3",
    "child.auxiliary=false",
    "train.epochs=2",
    "train.batch_size=16",
    "train.learning_rate=0.05",
    "train.drop_path_prob=0",
    "data.dataset=digits",
    "data.image_size=16",
    "data.max_examples=400",
    "data.cutout=0",
    "runtime.verbose=0",
]


# A fresh (untrained) 2-cell, 4-channel network on 8x8 digits.
FRESH = [
    "child.channels=4",
    "child.num_layers=2",
    "data.dataset=digits",
    "data.image_size=8",
    "data.max_examples=400",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A finished tiny retraining on digits (trained, so classes are not
    tied and quantized top-1 agreement means something)."""
    path = tmp_path_factory.mktemp("retrain")
    run_retrain(load_config([], TINY, RetrainConfig), "SNAS_moderate", path)
    return path


def _files(root):
    return sorted(
        os.path.relpath(os.path.join(d, f), root)
        for d, _, files in os.walk(root)
        for f in files
    )


@pytest.mark.slow
def test_every_format_is_published_verified_and_reported(model_dir, tmp_path):
    out = tmp_path / "out"
    code = cli.main(
        ["export", "--model-dir", str(model_dir), "--out", str(out)]
        + ["--runs", "3"]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    formats = [row["format"] for row in report["artifacts"]]
    assert formats == [f for f in exporter.FORMATS if f != "serving"]
    for row in report["artifacts"]:
        assert row["passed"], row
        assert (out / row["path"]).exists()
        assert row["bytes"] > 0 and row["latency_ms_median"] > 0
        if row["format"] in ("saved_model", "tflite_fp32", "onnx"):
            assert row["max_abs_diff"] <= exporter.FLOAT_TOLERANCE
    assert report["data"].startswith("digits")
    assert (out / "serving" / "snas" / "1" / "saved_model.pb").is_file()
    assert "snas" in (out / "serving" / "models.config").read_text()
    assert "| tflite_int8 |" in (out / "report.md").read_text()
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]
    # Published directories get the umask's mode (not a staging dir's
    # 0700), so a model server running as another user can read them.
    umask = os.umask(0)
    os.umask(umask)
    for directory, _, _ in os.walk(out):
        mode = os.stat(directory).st_mode & 0o777
        assert mode == 0o777 & ~umask, (directory, oct(mode))


@pytest.mark.slow
def test_a_second_export_adds_a_serving_version(model_dir, tmp_path):
    out = tmp_path / "out"
    source = exporter.load_source(model_dir)
    exporter.export_model(
        source, out, ["serving"], latency_runs=1, progress=None
    )
    first = _files(out / "serving" / "snas" / "1")
    exporter.export_model(
        source, out, ["serving"], latency_runs=1, progress=None
    )
    assert _files(out / "serving" / "snas" / "1") == first
    assert (out / "serving" / "snas" / "2" / "saved_model.pb").is_file()


def test_a_missed_tolerance_publishes_nothing(model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(exporter.MIN_AGREEMENT, "tflite_dynamic", 1.01)
    out = tmp_path / "out"
    source = exporter.load_source(model_dir)
    with pytest.raises(exporter.ExportError, match="tflite_dynamic"):
        exporter.export_model(
            source,
            out,
            ["onnx", "tflite_dynamic"],
            latency_runs=1,
            progress=None,
        )
    assert not out.exists() or _files(out) == []


@pytest.mark.parametrize(
    "args, named",
    [
        (["--model-dir", "{tmp}/missing"], "missing"),
        (["--model-dir", "{model}", "--formats", "tflite_int4"], "tflite_int4"),
        (
            ["--model-dir", "{model}", "--genotype", "SNAS_mild"],
            "does not match",
        ),
        (["--model-dir", "{tmp}/corrupt"], "corrupt"),
        ([], "--genotype"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(
    model_dir, tmp_path, capsys, args, named
):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in ("config.yaml", "genotype.json"):
        (corrupt / name).write_bytes((model_dir / name).read_bytes())
    (corrupt / "model.keras").write_bytes(b"not a zip file")
    out = tmp_path / "out"
    argv = ["export", "--out", str(out)] + [
        a.format(tmp=tmp_path, model=model_dir) for a in args
    ]
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and named in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_export_goes_through_the_format_functions(tmp_path, monkeypatch):
    """`export_model` writes with the per-format functions (the ones their
    own tests cover) and publishes with `common.publish_journaled`."""
    calls = []

    def spy(module, name):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            calls.append(name)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    spy(savedmodel, "export_saved_model")
    spy(tflite, "export_tflite")
    spy(serving, "write_serving_layout")
    spy(common, "publish_journaled")
    monkeypatch.setattr(exporter, "FIXED_BATCH", 2)
    monkeypatch.setattr(exporter, "HELD_OUT_BATCH", 2)
    source = exporter.load_source(genotype="SNAS_mild", overrides=FRESH)
    out = tmp_path / "out"
    report = exporter.export_model(
        source,
        out,
        ["serving", "tflite_fp32"],
        model_name="tiny.v-1_a",
        latency_runs=1,
        progress=None,
    )
    assert calls == [
        "export_saved_model",
        "export_tflite",
        "write_serving_layout",
        "publish_journaled",
    ]
    fp32 = report["artifacts"][1]
    assert fp32["format"] == "tflite_fp32" and fp32["passed"]
    assert fp32["interpreter"] == tflite.interpreter_backend()  # its notes
    assert (out / fp32["path"]).is_file()
    version = out / "serving" / "tiny.v-1_a" / "1"
    assert (version / "saved_model.pb").is_file()
    assert serving.served_models(out / "serving") == ["tiny.v-1_a"]
    assert "tiny.v-1_a" in (out / "serving" / "models.config").read_text()


def test_a_bad_model_name_is_refused_before_any_work(tmp_path, monkeypatch):
    def no_work(*_):
        raise AssertionError("export_model worked before checking the name")

    monkeypatch.setattr(exporter, "_batches", no_work)
    monkeypatch.setattr(common, "finish_publish", no_work)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"'my model'.*letters, digits"):
        exporter.export_model(object(), out, ["serving"], model_name="my model")
    assert not out.exists()


def test_cli_bad_model_name_exits_2_before_loading(
    tmp_path, capsys, monkeypatch
):
    def no_loading(*_):
        raise AssertionError("loaded a model before checking the name")

    monkeypatch.setattr(exporter, "load_source", no_loading)
    out = tmp_path / "out"
    code = cli.main(
        ["export", "--genotype", "SNAS_mild", "--out", str(out)]
        + ["--formats", "onnx", "--name", "my model"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "'my model'" in err and "letters, digits" in err
    assert not out.exists()
