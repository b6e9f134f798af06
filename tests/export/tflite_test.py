"""Tests of the TFLite export: convert -> run with ai_edge_litert -> compare.

A tiny child network (4 channels, 3 cells, 16x16) sees real digits from the
`snas_tf.data` pipeline. It is not trained (a Keras 3 `fit` spends ~45 s
tracing it): one training-mode pass sets its BN statistics and a ridge
regression on the pooled features sets the classifier, so that its logits
separate the classes the way a trained model's do, and int8 top-1
agreement means something.
"""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from testing_utils import fit_probe, tiny_child

from snas_tf.config import DataConfig
from snas_tf.data import make_pipelines
from snas_tf.export.tflite import (
    TFLITE_MODES,
    convert_tflite,
    export_tflite,
    interpreter_backend,
    make_interpreter,
    tflite_runner,
)

IMAGE_SIZE = 16
NUM_CLASSES = 10
FP32_ATOL = 1e-4
# Relative to the largest |logit|: fp16 weights and int8 weights (dynamic
# range) move the logits by float16 / int8 rounding of the weights.
NEAR_RTOL = {"fp16": 1e-2, "dynamic": 5e-2}
INT8_MIN_AGREEMENT = 0.8


@pytest.fixture(scope="module")
def digits():
    config = DataConfig(
        dataset="digits",
        image_size=IMAGE_SIZE,
        augment="none",
        validation_fraction=0.2,
    )
    pipelines = make_pipelines(config, batch_size=64)
    train = list(pipelines.train.take(2).as_numpy_iterator())
    test = list(pipelines.validation.take(2).as_numpy_iterator())
    return {
        "train_images": np.concatenate([x for x, _ in train]),
        "train_labels": np.concatenate([y for _, y in train]),
        "images": np.concatenate([x for x, _ in test]),
        "labels": np.concatenate([y for _, y in test]),
    }


@pytest.fixture(scope="module")
def model(digits):
    keras.utils.set_random_seed(0)
    model = tiny_child("SNAS_moderate", NUM_CLASSES, IMAGE_SIZE)
    fit_probe(
        model, digits["train_images"], digits["train_labels"], NUM_CLASSES
    )
    return model


@pytest.fixture(scope="module")
def keras_logits(model, digits):
    return np.asarray(model(digits["images"], training=False))


@pytest.fixture(scope="module")
def artifacts(model, digits, tmp_path_factory):
    """One export per mode; int8 calibrated on training images."""
    out = tmp_path_factory.mktemp("tflite")
    return {
        mode: export_tflite(
            model,
            out / f"model_{mode}.tflite",
            mode,
            representative_images=digits["train_images"],
        )
        for mode in TFLITE_MODES
    }


def _top1_agreement(a, b):
    return float(np.mean(a.argmax(-1) == b.argmax(-1)))


def test_probe_model_has_separated_logits(keras_logits, digits):
    # Otherwise int8 agreement would be a coin toss between tied classes.
    top2 = np.sort(keras_logits, axis=-1)[:, -2:]
    assert np.median(top2[:, 1] - top2[:, 0]) > 0.5
    accuracy = _top1_agreement(keras_logits, np.eye(10)[digits["labels"]])
    print(f"probe top-1 accuracy on held-out digits: {accuracy:.3f}")
    assert accuracy > 0.5


def test_fp32_matches_keras(artifacts, digits, keras_logits):
    artifact = artifacts["fp32"]
    assert artifact.name == "tflite_fp32" and not artifact.quantized
    logits = artifact.runner(digits["images"])
    assert logits.dtype == np.float32
    assert logits.shape == keras_logits.shape
    diff = np.max(np.abs(logits - keras_logits))
    print(f"fp32 max |diff| {diff:.2e}")
    assert diff < FP32_ATOL


@pytest.mark.parametrize("mode", ["fp16", "dynamic"])
def test_float_compute_modes_are_close(mode, artifacts, digits, keras_logits):
    # Not float paths: judged by top-1 agreement, not the float tolerance.
    assert artifacts[mode].quantized
    logits = artifacts[mode].runner(digits["images"])
    diff = np.max(np.abs(logits - keras_logits))
    scale = np.max(np.abs(keras_logits))
    agreement = _top1_agreement(logits, keras_logits)
    print(
        f"{mode}: max |diff| {diff:.2e} (logits up to {scale:.1f}), "
        f"top-1 agreement {agreement:.3f}"
    )
    assert diff < NEAR_RTOL[mode] * scale
    assert agreement >= 0.95


def test_fp16_stores_smaller_weights(artifacts):
    # The tiny child's file is mostly graph, so it shrinks only a little.
    assert artifacts["fp16"].notes["bytes"] < artifacts["fp32"].notes["bytes"]


def test_dynamic_quantizes_large_kernels(tmp_path):
    # TFLite leaves the tiny child's kernels (< 1024 elements) in float32,
    # so its "dynamic" file equals "fp32"; a 192x64 kernel is quantised.
    keras.utils.set_random_seed(1)
    images = keras.Input((8, 8, 3))
    x = keras.layers.Flatten()(images)
    x = keras.layers.Dense(64, activation="relu")(x)
    model = keras.Model(images, keras.layers.Dense(10)(x))
    float_kernel_bytes = 8 * 8 * 3 * 64 * 4
    path = tmp_path / "dense_dynamic.tflite"
    path.write_bytes(convert_tflite(model, "dynamic"))
    assert path.stat().st_size < float_kernel_bytes / 2
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    expected = np.asarray(model(x))
    diff = np.max(np.abs(tflite_runner(path)(x) - expected))
    print(f"dynamic (192x64 kernel): max |diff| {diff:.2e}")
    assert diff < NEAR_RTOL["dynamic"] * np.max(np.abs(expected))


def test_int8_is_integer_end_to_end(artifacts):
    interpreter = make_interpreter(artifacts["int8"].path)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    tensor_types = {d["dtype"] for d in interpreter.get_tensor_details()}
    assert np.float32 not in tensor_types


def test_int8_agrees_with_keras(artifacts, digits, keras_logits):
    artifact = artifacts["int8"]
    assert artifact.quantized
    logits = artifact.runner(digits["images"])
    agreement = _top1_agreement(logits, keras_logits)
    accuracy = _top1_agreement(logits, np.eye(10)[digits["labels"]])
    print(
        f"int8 top-1 agreement with Keras {agreement:.3f} on "
        f"{len(logits)} digits; accuracy {accuracy:.3f}"
    )
    assert agreement >= INT8_MIN_AGREEMENT


def test_runner_batch_sizes_agree(artifacts, digits):
    runner = artifacts["int8"].runner
    images = digits["images"][:5]
    batched = runner(images)
    one_by_one = np.concatenate([runner(image[None]) for image in images])
    np.testing.assert_array_equal(batched, one_by_one)
    assert runner(images[:2]).shape == (2, NUM_CLASSES)


def test_runner_loops_over_a_fixed_batch_input(tmp_path):
    @tf.function(input_signature=[tf.TensorSpec((1, 2, 2, 3), tf.float32)])
    def affine(x):
        return tf.reshape(x, (1, 12))[:, :4] * 2.0 + 1.0

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [affine.get_concrete_function()]
    )
    path = tmp_path / "fixed.tflite"
    path.write_bytes(converter.convert())
    images = np.arange(36, dtype=np.float32).reshape(3, 2, 2, 3)
    np.testing.assert_allclose(
        tflite_runner(path)(images), images.reshape(3, 12)[:, :4] * 2 + 1
    )


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_backend_falls_back_to_tf_lite(artifacts, digits, monkeypatch):
    assert interpreter_backend() == "ai_edge_litert"
    images = digits["images"][:4]
    litert = artifacts["fp32"].runner(images)
    # A None entry in sys.modules makes the import raise ImportError.
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    assert interpreter_backend() == "tf.lite"
    fallback = tflite_runner(artifacts["fp32"].path)(images)
    np.testing.assert_allclose(fallback, litert, atol=1e-5)


def test_unknown_mode_is_rejected(model):
    with pytest.raises(ValueError, match=r"'int4'.*'fp32', 'fp16'"):
        convert_tflite(model, "int4")


def test_int8_needs_representative_images(model, digits):
    with pytest.raises(ValueError, match="representative_images"):
        convert_tflite(model, "int8")
    with pytest.raises(ValueError, match="representative_images"):
        convert_tflite(model, "int8", np.zeros((0, 16, 16, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 16, 16, 3\)"):
        convert_tflite(model, "int8", np.zeros((2, 8, 8, 3), np.float32))


def test_model_with_two_outputs_is_rejected():
    images = keras.Input((4, 4, 3))
    x = keras.layers.GlobalAveragePooling2D()(images)
    two = keras.Model(images, [x, x])
    with pytest.raises(ValueError, match="inference_model"):
        convert_tflite(two, "fp32")
