"""Tests of the ONNX export: export -> onnx.checker -> onnxruntime vs Keras.

One tiny child network (4 channels, 3 cells, 16x16) is exported once per
module; its BatchNorm statistics are randomised so that a wrong folding of
BN into the convolutions would show in the logits.
"""

import os

import keras
import numpy as np
import onnx
import pytest
import tf2onnx
from testing_utils import tiny_child

from snas_tf.export.onnx import export_onnx, onnx_runner

IMAGE_SIZE = 16
NUM_CLASSES = 3
ATOL = 1e-4


@pytest.fixture(scope="module")
def model():
    model = tiny_child("SNAS_moderate", NUM_CLASSES, IMAGE_SIZE)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(0, 0.5, shape))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, shape))
    return model


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "child.onnx"
    info = export_onnx(model, path)
    return path, info


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n, IMAGE_SIZE, IMAGE_SIZE, 3)
    return rng.normal(size=shape).astype(np.float32)


def test_real_onnx_package_is_imported():
    # export/onnx.py must not shadow the `onnx` package.
    assert hasattr(onnx, "checker")
    assert os.path.basename(os.path.dirname(onnx.__file__)) == "onnx"


def test_exported_file_passes_checker(exported):
    path, info = exported
    onnx.checker.check_model(str(path), full_check=True)
    assert info["inputs"] == ["images"]
    assert info["outputs"] == ["logits"]


def test_graph_opset_is_at_least_17(exported):
    path, info = exported
    proto = onnx.load(str(path))
    (version,) = [
        o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")
    ]
    assert version >= 17
    assert info["opset"] == version


@pytest.mark.parametrize("batch", [2, 3])
def test_onnxruntime_matches_keras(model, exported, batch):
    path, _ = exported
    images = _images(batch, seed=batch)
    expected = keras.ops.convert_to_numpy(model(images, training=False))
    logits = onnx_runner(path)(images)
    assert logits.dtype == np.float32
    assert logits.shape == (batch, NUM_CLASSES)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("opset", [13, 16])
def test_old_opset_is_rejected(model, tmp_path, opset):
    path = tmp_path / "child.onnx"
    with pytest.raises(ValueError, match=str(opset)):
        export_onnx(model, path, opset=opset)
    assert not path.exists()


def test_model_with_two_outputs_is_rejected(tmp_path):
    x = keras.Input((4,), name="images")
    two_heads = keras.Model(x, [keras.layers.Dense(2)(x)] * 2)
    with pytest.raises(ValueError, match="inference_model"):
        export_onnx(two_heads, tmp_path / "m.onnx")


def _converter_fails(monkeypatch, exported):
    def fail(*args, **kwargs):
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(tf2onnx.convert, "from_function", fail)


def _checker_fails(monkeypatch, exported):
    # The converter returns the module's export at once (a real conversion
    # costs seconds); the written temporary file is then rejected.
    proto = onnx.load(str(exported[0]))
    monkeypatch.setattr(
        tf2onnx.convert, "from_function", lambda *a, **k: (proto, None)
    )

    def fail(model_path, *args, **kwargs):
        # Reject only after the temporary file has really been written.
        assert os.path.getsize(model_path) == proto.ByteSize()
        raise onnx.checker.ValidationError("rejected")

    monkeypatch.setattr(onnx.checker, "check_model", fail)


@pytest.mark.parametrize("breakage", [_converter_fails, _checker_fails])
def test_failure_leaves_no_partial_file(
    model, exported, tmp_path, monkeypatch, breakage
):
    breakage(monkeypatch, exported)
    fresh = tmp_path / "fresh.onnx"
    kept = tmp_path / "kept.onnx"
    kept.write_bytes(b"previous export")
    for path in (fresh, kept):
        with pytest.raises((RuntimeError, onnx.checker.ValidationError)):
            export_onnx(model, path)
    assert not fresh.exists()
    assert kept.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.onnx"]
