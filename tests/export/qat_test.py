"""Tests of quantisation-aware fine-tuning (TFMOT) to an int8 TFLite file.

The BN split runs in this process on tf_keras twins (no TFMOT import). The
QAT itself runs once per module in its child process, on a tiny child
network (4 channels, 3 cells, 16x16) that sees real digits: one
training-mode pass sets its BN statistics and a ridge regression on the
pooled features its classifier (a Keras 3 `fit` would spend ~45 s
tracing), so that its logits separate the classes as a trained model's do.
"""

import os
import sys

import keras
import numpy as np
import pytest
import tf_keras
from testing_utils import fit_probe

from snas_tf.config import DataConfig
from snas_tf.data import make_pipelines
from snas_tf.export import qat
from snas_tf.export.tflite import make_interpreter, tflite_runner
from snas_tf.models.child_network import build_child_network

IMAGE_SIZE = 16
CHILD_KWARGS = dict(num_classes=10, channels=4, num_layers=3, image_size=16)
QAT_MIN_AGREEMENT = 0.75


def _randomise_batch_norms(model, seed=0):
    """Random BN parameters and statistics, so a wrong channel slice shows."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 2.0, gamma.shape),
                    rng.normal(0, 0.5, beta.shape),
                    rng.normal(0, 0.5, mean.shape),
                    rng.uniform(0.5, 2.0, var.shape),
                ]
            )


# --- The BN split (in process, tf_keras only) ------------------------------


def test_split_of_the_twin_is_exact():
    twin = build_child_network(
        "SNAS_moderate", auxiliary=False, layers=tf_keras.layers, **CHILD_KWARGS
    )
    _randomise_batch_norms(twin)
    split = qat.split_concat_batch_norms(twin)
    names = [layer.name for layer in split.layers]
    # Cell 2 follows the reduction cell 1: its preprocess0 is the
    # FactorizedReduce, the only concat -> BN in SNAS_moderate.
    assert "cell2_pre0_bn" not in names
    assert {"cell2_pre0_bn_branch0", "cell2_pre0_bn_branch1"} <= set(names)
    assert names.index("cell2_pre0_concat") > names.index(
        "cell2_pre0_bn_branch1"
    )
    assert len(split.layers) == len(twin.layers) + 1
    x = np.random.default_rng(1).normal(size=(4, 16, 16, 3)).astype("float32")
    for training in (False, True):
        np.testing.assert_array_equal(
            split(x, training=training).numpy(),
            twin(x, training=training).numpy(),
        )
    assert "tensorflow_model_optimization" not in sys.modules


def _concat_bn_model(extra_reader):
    layers = tf_keras.layers
    images = layers.Input((6, 6, 3))
    a = layers.Conv2D(2, 1, name="a")(images)
    b = layers.Conv2D(3, 1, name="b")(images)
    joined = layers.Concatenate(name="join")([a, b])
    normed = layers.BatchNormalization(name="bn")(joined)
    out = layers.Conv2D(4, 1, name="head")(normed)
    if extra_reader:
        out = [out, layers.ReLU(name="raw")(joined)]
    return tf_keras.Model(images, out)


@pytest.mark.parametrize("extra_reader", [False, True])
def test_split_is_exact_per_channel_slice(extra_reader):
    model = _concat_bn_model(extra_reader)
    _randomise_batch_norms(model, seed=2)
    split = qat.split_concat_batch_norms(model)
    names = {layer.name for layer in split.layers}
    assert {"bn_branch0", "bn_branch1"} <= names and "bn" not in names
    # A concat that something else reads stays; a new one joins the BNs.
    assert ("bn_concat" in names) == extra_reader
    assert split.get_layer("bn_branch1").get_weights()[0].shape == (3,)
    x = np.random.default_rng(3).normal(size=(2, 6, 6, 3)).astype("float32")
    for training in (False, True):
        got, want = split(x, training=training), model(x, training=training)
        if not extra_reader:
            got, want = [got], [want]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_split_returns_a_model_without_concat_bn_unchanged():
    images = tf_keras.layers.Input((4, 4, 3))
    model = tf_keras.Model(images, tf_keras.layers.Conv2D(2, 1)(images))
    assert qat.split_concat_batch_norms(model) is model


def test_split_rejects_a_keras3_model():
    images = keras.Input((4, 4, 3))
    model = keras.Model(images, keras.layers.Conv2D(2, 1)(images))
    with pytest.raises(TypeError, match="tf_keras"):
        qat.split_concat_batch_norms(model)


# --- QAT end to end (one child process) ------------------------------------


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
    model = build_child_network(
        "SNAS_moderate", auxiliary=False, **CHILD_KWARGS
    )
    fit_probe(model, digits["train_images"], digits["train_labels"], 10)
    return model


@pytest.fixture(scope="module")
def qat_result(model, digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("qat") / "model_qat_int8.tflite"
    meta = qat.quantization_aware_int8(
        model,
        "SNAS_moderate",
        CHILD_KWARGS,
        digits["train_images"],
        digits["train_labels"],
        path,
        epochs=1,
        batch_size=32,
        calibration_images=32,
        timeout=600,
    )
    return path, meta


def test_qat_metadata(qat_result):
    path, meta = qat_result
    print({k: v for k, v in meta.items() if k != "path"})
    assert meta["path"] == str(path)
    assert meta["bytes"] == os.path.getsize(path)
    # The tf_keras twin and its BN split reproduce the Keras 3 logits.
    assert meta["twin_max_abs_diff"] < 1e-4
    assert meta["split_max_abs_diff"] < 1e-4
    assert meta["split_batch_norms"] == 1
    assert meta["steps"] == 4  # 128 images, batch 32, one epoch
    assert np.isfinite(meta["final_loss"])
    assert meta["conv_sparsity"] < 0.01  # no pruning asked for


def test_qat_tflite_is_int8_and_agrees_with_keras(qat_result, model, digits):
    path, _ = qat_result
    interpreter = make_interpreter(path)
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    logits = tflite_runner(path)(digits["images"])
    expected = np.asarray(model(digits["images"], training=False))
    agreement = float(np.mean(logits.argmax(-1) == expected.argmax(-1)))
    accuracy = float(np.mean(logits.argmax(-1) == digits["labels"]))
    print(
        f"QAT int8 top-1 agreement with Keras {agreement:.3f} on "
        f"{len(logits)} digits; accuracy {accuracy:.3f}"
    )
    assert logits.shape == expected.shape
    assert agreement >= QAT_MIN_AGREEMENT


def test_this_process_keeps_keras_3(qat_result):
    assert os.environ.get("TF_USE_LEGACY_KERAS") is None
    assert "tensorflow_model_optimization" not in sys.modules
    assert keras.__version__.startswith("3.")


@pytest.mark.slow
def test_pruned_qat_keeps_its_sparsity(model, digits, tmp_path):
    # A second worker run (~45 s here): magnitude pruning, then QAT with the
    # sparsity-preserving scheme.
    path = tmp_path / "model_pruned_qat_int8.tflite"
    meta = qat.quantization_aware_int8(
        model,
        "SNAS_moderate",
        CHILD_KWARGS,
        digits["train_images"],
        digits["train_labels"],
        path,
        epochs=1,
        batch_size=32,
        prune=True,
        sparsity=0.3,
        calibration_images=32,
        timeout=600,
    )
    print({k: v for k, v in meta.items() if k != "path"})
    assert meta["steps"] == 8  # 4 pruning + 4 QAT
    assert len(meta["prune_losses"]) == 1
    assert meta["conv_sparsity"] == pytest.approx(0.3, abs=0.02)
    logits = tflite_runner(path)(digits["images"])
    expected = np.asarray(model(digits["images"], training=False))
    agreement = float(np.mean(logits.argmax(-1) == expected.argmax(-1)))
    print(f"pruned QAT int8 top-1 agreement with Keras {agreement:.3f}")
    # Measured 0.38: a 30% cut at step 0 of a network whose classifier was
    # fit to its exact random features, then 4 steps; better than chance
    # (0.1) is what such a short run shows.
    assert agreement > 0.2


def test_worker_failure_is_a_runtime_error_with_its_stderr(
    model, digits, tmp_path, monkeypatch
):
    monkeypatch.setattr(qat, "_WORKER", "snas_tf.export.no_such_worker")
    with pytest.raises(RuntimeError, match=r"(?s)exit code 1.*no_such_worker"):
        qat.quantization_aware_int8(
            model,
            "SNAS_moderate",
            CHILD_KWARGS,
            digits["train_images"][:4],
            digits["train_labels"][:4],
            tmp_path / "never.tflite",
        )
    assert not (tmp_path / "never.tflite").exists()


def test_bad_arguments_are_rejected_before_the_worker(model, digits, tmp_path):
    images, labels = digits["train_images"][:4], digits["train_labels"][:4]
    out = tmp_path / "never.tflite"
    with pytest.raises(ValueError, match=r"\['depth'\].*'channels'"):
        qat.quantization_aware_int8(
            model, "SNAS_moderate", {"depth": 3}, images, labels, out
        )
    with pytest.raises(ValueError, match="labels"):
        qat.quantization_aware_int8(
            model, "SNAS_moderate", CHILD_KWARGS, images, labels[:3], out
        )
    with pytest.raises(ValueError, match=r"\(N, 16, 16, 3\)"):
        qat.quantization_aware_int8(
            model, "SNAS_moderate", CHILD_KWARGS, images[:, :8], labels, out
        )
    args = (model, "SNAS_moderate", CHILD_KWARGS, images, labels, out)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        qat.quantization_aware_int8(*args, epochs=0)
    with pytest.raises(ValueError, match=r"sparsity must be in \(0, 1\)"):
        qat.quantization_aware_int8(*args, prune=True, sparsity=1.5)
    assert not out.exists()
