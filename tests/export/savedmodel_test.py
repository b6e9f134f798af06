"""SavedModel export: both signatures, TensorFlow's C++ loader, bad bytes."""

import functools
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from testing_utils import tiny_child

from snas_tf.config import DataConfig
from snas_tf.data import preprocess_eval
from snas_tf.export import savedmodel

DATA = DataConfig(dataset="digits", image_size=16)
SAVED_MODEL_CLI = os.path.join(
    os.path.dirname(sys.executable), "saved_model_cli"
)
CLI_INPUT = np.random.default_rng(1).normal(size=(2, 16, 16, 3))
CLI_INPUT = CLI_INPUT.astype("float32")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, SavedModel directory), exported once for the module."""
    keras.utils.set_random_seed(0)
    model = tiny_child("SNAS_moderate", 3, 16)
    directory = str(tmp_path_factory.mktemp("export") / "saved_model")
    savedmodel.export_saved_model(model, directory, DATA)
    return model, directory


@pytest.fixture(scope="module", autouse=True)
def cli(exported, tmp_path_factory):
    """`saved_model_cli show` and `run` on `serving_default`, started as
    soon as the SavedModel exists: each starts its own TensorFlow (~10 s
    of CPU here), so they run while the other tests do."""
    _, directory = exported
    work = tmp_path_factory.mktemp("cli")
    np.save(work / "x.npy", CLI_INPUT)
    args = ["--dir", directory, "--tag_set", "serve"]
    args += ["--signature_def", "serving_default"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    processes = {
        "show": [SAVED_MODEL_CLI, "show", *args],
        "run": [
            SAVED_MODEL_CLI,
            "run",
            *args,
            "--inputs",
            f"images={work / 'x.npy'}",
            "--outdir",
            str(work / "out"),
        ],
    }
    processes = {
        name: subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name, command in processes.items()
    }
    yield processes, work / "out"
    for process in processes.values():
        process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported[1])


@pytest.fixture(scope="module")
def float_runner(exported):
    return savedmodel.saved_model_runner(exported[1])


@pytest.fixture(scope="module")
def encoded_runner(exported):
    return savedmodel.bytes_runner(exported[1])


@functools.cache
def digits_png(index=0):
    """A real 8x8 grey image from load_digits, PNG-encoded."""
    from sklearn.datasets import load_digits

    image = load_digits().images[index]
    pixels = np.round(image * (255.0 / 16.0)).astype("uint8")[..., None]
    return tf.io.encode_png(pixels).numpy()


def random_jpeg(shape=(20, 28, 3), seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, shape, "uint8")
    return tf.io.encode_jpeg(pixels).numpy()


def float_path(image_bytes):
    """What the float signature sees for the same files: decoded here, then
    `preprocess_eval`, as the evaluation pipeline does."""
    return np.stack(
        [
            preprocess_eval(
                tf.io.decode_image(b, channels=3, expand_animations=False),
                DATA,
            ).numpy()
            for b in image_bytes
        ]
    )


def finish(process):
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


def test_layout_and_no_staging_left(exported):
    _, directory = exported
    assert os.path.isfile(os.path.join(directory, "saved_model.pb"))
    parent = os.path.dirname(directory)
    assert [n for n in os.listdir(parent) if n.startswith(".")] == []


def test_signatures(loaded):
    assert set(loaded.signatures) == {"serving_default", "serving_bytes"}
    default = loaded.signatures["serving_default"]
    assert list(default.structured_input_signature[1]) == ["images"]
    spec = default.structured_input_signature[1]["images"]
    assert spec.dtype == tf.float32
    assert spec.shape.as_list() == [None, 16, 16, 3]
    as_bytes = loaded.signatures["serving_bytes"]
    assert list(as_bytes.structured_input_signature[1]) == ["image_bytes"]
    spec = as_bytes.structured_input_signature[1]["image_bytes"]
    assert spec.dtype == tf.string and spec.shape.as_list() == [None]
    for fn in (default, as_bytes):
        assert set(fn.structured_outputs) == {"logits", "probabilities"}


def test_runner_matches_keras(exported, float_runner):
    model, _ = exported
    x = np.random.default_rng(2).normal(size=(3, 16, 16, 3)).astype("float32")
    got = float_runner(x)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    assert got.dtype == np.float32 and got.shape == (3, 3)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_bytes_signature_matches_float_path(float_runner, encoded_runner):
    """Real digits (8x8 grey PNGs, upsampled in-graph) and a colour JPEG of
    another size: the bytes signature decodes, resizes and normalises as
    `preprocess_eval` does, so it gives the float path's logits and
    class."""
    files = [digits_png(0), random_jpeg(), digits_png(7)]
    got = encoded_runner(files)
    expected = float_runner(float_path(files))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (b"definitely not an image", "Unknown image file format"),
        ("truncated PNG", "PNG"),
        (b"", "image_bytes holds an empty string"),
    ],
)
def test_corrupt_bytes_raise_clear_error(encoded_runner, corrupt, message):
    if corrupt == "truncated PNG":
        corrupt = digits_png()[:40]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        encoded_runner([digits_png(), corrupt])
    # Nothing is broken: the signature serves the next request.
    assert encoded_runner([digits_png()]).shape == (1, 3)


def test_refuses_to_overwrite(exported):
    model, directory = exported
    with pytest.raises(FileExistsError, match="not overwriting"):
        savedmodel.export_saved_model(model, directory, DATA)


def test_rejects_mismatched_model(exported, tmp_path):
    model, _ = exported
    with pytest.raises(ValueError, match=r"does not match data.image_size 32"):
        savedmodel.export_saved_model(
            model, tmp_path / "a", DataConfig(dataset="digits", image_size=32)
        )
    inputs = keras.Input((16, 16, 3))
    two = keras.Model(inputs, [model(inputs), model(inputs)])
    with pytest.raises(ValueError, match="inference_model"):
        savedmodel.export_saved_model(two, tmp_path / "b", DATA)
    assert os.listdir(tmp_path) == []


def test_saved_model_cli_show_and_run(exported, cli):
    """TensorFlow's C++ SavedModel loader (TF Serving's) loads and runs the
    `serving_default` signature, and `show` lists its inputs and outputs."""
    model, _ = exported
    processes, out = cli
    rc, shown, err = finish(processes["show"])
    assert rc == 0, err
    for text in ("images", "DT_FLOAT", "(-1, 16, 16, 3)", "logits"):
        assert text in shown, shown
    assert "probabilities" in shown and "tensorflow/serving/predict" in shown
    rc, _, err = finish(processes["run"])
    assert rc == 0, err
    logits = np.load(out / "logits.npy")
    probabilities = np.load(out / "probabilities.npy")
    expected = keras.ops.convert_to_numpy(model(CLI_INPUT, training=False))
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
