"""Tests of `snas export`: every format written, verified, published."""

import dataclasses
import json
import os

import numpy as np
import pytest
from testing_utils import fit_probe

from snas_tf.config import RetrainConfig, load_config, save_config
from snas_tf.data import make_pipelines
from snas_tf.export import common, exporter, onnx, savedmodel, serving, tflite
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


@pytest.fixture(scope="module")
def fresh_dir(tmp_path_factory):
    """What `load_source` reads from a retraining (config.yaml,
    genotype.json, model.keras), for a fresh network: the CLI's input
    checks without a retraining."""
    path = tmp_path_factory.mktemp("fresh")
    source = exporter.load_source(genotype="SNAS_moderate", overrides=FRESH)
    save_config(source.config, path / "config.yaml")
    (path / "genotype.json").write_text(source.genotype.to_json(indent=2))
    source.model.save(path / "model.keras")
    return path


@pytest.fixture(scope="module")
def probed():
    """A fresh network whose logits separate the digits (`fit_probe`), so
    that int8 top-1 agreement means something without a retraining."""
    source = exporter.load_source(genotype="SNAS_moderate", overrides=FRESH)
    # Plain training images: RetrainConfig's cutout 16 would blank 8x8.
    data = dataclasses.replace(source.config.data, augment="none", cutout=0)
    images, labels = next(
        iter(make_pipelines(data, batch_size=128).train.as_numpy_iterator())
    )
    fit_probe(source.model, images, labels, 10)
    return source


def _files(root):
    return sorted(
        os.path.relpath(os.path.join(d, f), root)
        for d, _, files in os.walk(root)
        for f in files
    )


def _reloaded_runner(row, path):
    if row["format"] == "saved_model":
        return savedmodel.saved_model_runner(path)
    if row["format"] == "onnx":
        return onnx.onnx_runner(path)
    return tflite.tflite_runner(path)  # tflite_* and qat_int8


def _check_rows_against_the_published_files(source, out, report):
    """Each row's figures, computed again from its published file and the
    Keras model on the exporter's batches (`_batches` is seeded)."""
    fixed, held, *_ = exporter._batches(source)
    expected_fixed = source.model.predict(fixed, verbose=0)
    expected_held = np.argmax(source.model.predict(held, verbose=0), -1)
    for row in report["artifacts"]:
        path = out / row["path"]
        assert row["bytes"] == common.size_bytes(path), row
        runner = _reloaded_runner(row, str(path))
        diff = float(np.max(np.abs(runner(fixed) - expected_fixed)))
        agreement = float(np.mean(np.argmax(runner(held), -1) == expected_held))
        assert row["max_abs_diff"] == pytest.approx(diff, rel=1e-3, abs=1e-7)
        assert row["top1_agreement"] == pytest.approx(agreement)
        if row["format"] in exporter.MIN_AGREEMENT:
            assert agreement >= exporter.MIN_AGREEMENT[row["format"]], row
        else:
            assert diff <= exporter.FLOAT_TOLERANCE, row


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
    source = exporter.load_source(model_dir)
    _check_rows_against_the_published_files(source, out, report)
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


def _wrong_outputs(monkeypatch, mode, wrong):
    """Makes `export_tflite(..., mode)` return its real artifact with a
    runner whose outputs pass through `wrong`."""
    real = tflite.export_tflite

    def export(model, path, export_mode, *args, **kwargs):
        artifact = real(model, path, export_mode, *args, **kwargs)
        if export_mode != mode:
            return artifact
        runner = artifact.runner
        return dataclasses.replace(
            artifact, runner=lambda images: wrong(runner(images))
        )

    monkeypatch.setattr(tflite, "export_tflite", export)


@pytest.mark.parametrize(
    "wrong, message",
    [
        (None, None),
        # Float logits off by 1e-3, ten times the 1e-4 tolerance.
        (
            "fp32",
            r"tflite_fp32 misses max \|diff\| <= 0.0001 \(max \|diff\| 1.0",
        ),
        # Classes rolled by one: the top-1 class agrees only where the
        # int8 model's own top-1 was already off by one (below 0.1).
        (
            "int8",
            r"tflite_int8 misses top-1 agreement >= 0.8 .*agreement 0\.0\d\d\)",
        ),
    ],
    ids=["unchanged", "fp32_shifted", "int8_rolled"],
)
def test_a_wrong_artifact_fails_naming_it_and_publishes_nothing(
    probed, tmp_path, monkeypatch, wrong, message
):
    if wrong == "fp32":
        _wrong_outputs(monkeypatch, "fp32", lambda logits: logits + 1e-3)
    if wrong == "int8":
        _wrong_outputs(monkeypatch, "int8", lambda y: np.roll(y, 1, axis=-1))
    out = tmp_path / "out"
    formats = ["tflite_fp32", "tflite_int8"]
    if wrong is None:
        # The same export unchanged passes: the failures below are the
        # wrong outputs' doing, and the report holds what its files give.
        report = exporter.export_model(
            probed, out, formats, latency_runs=1, progress=None
        )
        _check_rows_against_the_published_files(probed, out, report)
        return
    with pytest.raises(exporter.ExportError, match=message) as info:
        exporter.export_model(
            probed, out, formats, latency_runs=1, progress=None
        )
    # Only the wrong one is named.
    other = {"fp32": "tflite_int8", "int8": "tflite_fp32"}[wrong]
    assert other not in str(info.value)
    assert not out.exists() or _files(out) == []


def test_latency_is_the_median_of_the_timed_runs(monkeypatch):
    # perf_counter() is read before and after each timed run: 5, 1, 2 ms
    # (median 2, mean 2.67); the warm-up call is not timed.
    clock = iter([0.0, 0.005, 1.0, 1.001, 2.0, 2.002])
    monkeypatch.setattr(exporter.time, "perf_counter", lambda: next(clock))
    calls = []
    got = exporter._latency_ms(calls.append, "image", runs=3)
    assert got == pytest.approx(2.0)
    assert calls == ["image"] * 4


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
    fresh_dir, tmp_path, capsys, args, named
):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in ("config.yaml", "genotype.json"):
        (corrupt / name).write_bytes((fresh_dir / name).read_bytes())
    (corrupt / "model.keras").write_bytes(b"not a zip file")
    out = tmp_path / "out"
    argv = ["export", "--out", str(out)] + [
        a.format(tmp=tmp_path, model=fresh_dir) for a in args
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
