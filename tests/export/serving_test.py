"""TF Serving layout, models.config and the REST / gRPC request builders."""

import base64
import filecmp
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.config import model_server_config_pb2
from testing_utils import tiny_child

from snas_tf.config import DataConfig
from snas_tf.export import savedmodel, serving

DATA = DataConfig(dataset="cifar10", image_size=16)


@pytest.fixture(scope="module")
def saved_model_dir(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = tiny_child("SNAS_moderate", 3, 16)
    directory = str(tmp_path_factory.mktemp("export") / "saved_model")
    savedmodel.export_saved_model(model, directory, DATA)
    return directory


@pytest.fixture(scope="module")
def signatures(saved_model_dir):
    loaded = tf.saved_model.load(saved_model_dir)
    return loaded, dict(loaded.signatures)


def images(n=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 16, 16, 3)).astype("float32")


def encoded(n=2, seed=0):
    rng = np.random.default_rng(seed)
    return [
        tf.io.encode_png(rng.integers(0, 256, (12, 10, 3), "uint8")).numpy()
        for _ in range(n)
    ]


def input_specs(signatures, name):
    return signatures[1][name].structured_input_signature[1]


def call(signatures, name, inputs):
    return signatures[1][name](**inputs)["logits"].numpy()


# Layout -------------------------------------------------------------------


def test_next_version_ignores_hidden_and_other_names(tmp_path):
    assert serving.next_version(tmp_path / "missing") == 1
    for name in ("1", "3", "10", ".tmp-export-x", "notes", "7.bak"):
        (tmp_path / name).mkdir()
    (tmp_path / "12").write_text("a file, not a version")
    assert serving.next_version(tmp_path) == 11


def test_layout_versions_never_overwrite(saved_model_dir, tmp_path):
    root = tmp_path / "serving"
    first = serving.write_serving_layout(saved_model_dir, root, "snas")
    second = serving.write_serving_layout(saved_model_dir, root, "snas")
    assert first == str(root / "snas" / "1")
    assert second == str(root / "snas" / "2")
    assert sorted(os.listdir(root / "snas")) == ["1", "2"]  # no staging left
    for version in (first, second):
        assert os.path.isfile(os.path.join(version, "saved_model.pb"))
        assert os.path.isdir(os.path.join(version, "variables"))


def test_served_copy_is_identical(saved_model_dir, tmp_path):
    version = serving.write_serving_layout(saved_model_dir, tmp_path, "snas")
    source = sorted(
        os.path.relpath(os.path.join(d, f), saved_model_dir)
        for d, _, files in os.walk(saved_model_dir)
        for f in files
    )
    match, mismatch, errors = filecmp.cmpfiles(
        saved_model_dir, version, source, shallow=False
    )
    assert (match, mismatch, errors) == (source, [], [])


def test_interrupted_copy_leaves_no_version(
    saved_model_dir, tmp_path, monkeypatch
):
    """A copy that dies half-way leaves no version directory; a hidden
    staging directory left by a kill is ignored by the next export."""
    root = tmp_path / "serving"

    def copy_then_die(src, dst, **kwargs):
        shutil.copy2(os.path.join(src, "saved_model.pb"), dst)
        raise KeyboardInterrupt  # as a Ctrl-C or a kill mid-copy

    monkeypatch.setattr(serving.shutil, "copytree", copy_then_die)
    with pytest.raises(KeyboardInterrupt):
        serving.write_serving_layout(saved_model_dir, root, "snas")
    assert os.listdir(root / "snas") == []
    monkeypatch.undo()

    (root / "snas" / ".tmp-export-killed").mkdir()  # SIGKILL leftovers
    version = serving.write_serving_layout(saved_model_dir, root, "snas")
    assert os.path.basename(version) == "1"


def test_version_taken_by_another_writer_is_skipped(
    saved_model_dir, tmp_path, monkeypatch
):
    """Another writer publishes version 1 between our look and our rename:
    ours becomes version 2 and theirs is untouched."""
    root = tmp_path / "serving"
    theirs = root / "snas" / "1"
    theirs.mkdir(parents=True)
    (theirs / "marker").write_text("theirs")
    answers = iter([1, 2])
    monkeypatch.setattr(serving, "next_version", lambda _: next(answers))
    version = serving.write_serving_layout(saved_model_dir, root, "snas")
    assert version == str(root / "snas" / "2")
    assert os.listdir(theirs) == ["marker"]


def test_layout_at_a_given_version_never_overwrites(saved_model_dir, tmp_path):
    root = tmp_path / "serving"
    version = serving.write_serving_layout(
        saved_model_dir, root, "snas", version=7
    )
    assert version == str(root / "snas" / "7")
    with pytest.raises(FileExistsError, match="7"):
        serving.write_serving_layout(saved_model_dir, root, "snas", version=7)
    assert sorted(os.listdir(root / "snas")) == ["7"]  # no staging left
    with pytest.raises(ValueError, match="-1"):
        serving.write_serving_layout(saved_model_dir, root, "snas", version=-1)


def test_layout_rejects_bad_inputs(saved_model_dir, tmp_path):
    with pytest.raises(ValueError, match="no saved_model.pb"):
        serving.write_serving_layout(tmp_path, tmp_path / "s", "snas")
    for name in ("", "../up", "a/b", ".hidden", "my model", "a:b", 3):
        with pytest.raises(ValueError, match="Invalid model name"):
            serving.write_serving_layout(saved_model_dir, tmp_path, name)
    assert os.listdir(tmp_path) == []


# models.config --------------------------------------------------------------


def parse_config(path):
    config = model_server_config_pb2.ModelServerConfig()
    with open(path) as f:
        text_format.Parse(f.read(), config)
    return [
        (c.name, c.base_path, c.model_platform)
        for c in config.model_config_list.config
    ]


def test_models_config(saved_model_dir, tmp_path):
    for name in ("snas", "snas_small"):
        serving.write_serving_layout(saved_model_dir, tmp_path, name)
    path = serving.write_models_config(tmp_path, ["snas"])
    assert path == str(tmp_path / "models.config")
    assert parse_config(path) == [("snas", "/models/snas", "tensorflow")]
    # None: every model with a version; rewritten in place.
    serving.write_models_config(tmp_path)
    assert parse_config(path) == [
        ("snas", "/models/snas", "tensorflow"),
        ("snas_small", "/models/snas_small", "tensorflow"),
    ]
    assert sorted(os.listdir(tmp_path)) == [
        "models.config",
        "snas",
        "snas_small",
    ]
    with open(path) as f:
        assert f.read().startswith("model_config_list {")


def test_models_config_rejects_bad_names(saved_model_dir, tmp_path):
    serving.write_serving_layout(saved_model_dir, tmp_path, "snas")
    with pytest.raises(ValueError, match="'other' has no version"):
        serving.write_models_config(tmp_path, ["snas", "other"])
    with pytest.raises(ValueError, match=r"Duplicate model names \['snas'\]"):
        serving.write_models_config(tmp_path, ["snas", "snas"])
    with pytest.raises(ValueError, match="No models to serve"):
        serving.write_models_config(tmp_path / "empty")
    assert not os.path.exists(tmp_path / "models.config")


# Requests -------------------------------------------------------------------


def test_rest_url():
    assert (
        serving.rest_url("localhost", 8501, "snas")
        == "http://localhost:8501/v1/models/snas:predict"
    )
    assert serving.rest_url("h", 1, "snas", version=3).endswith(
        "/v1/models/snas/versions/3:predict"
    )
    with pytest.raises(ValueError, match="port"):
        serving.rest_url("h", "8501", "snas")


def test_rest_float_request_matches_signature(signatures):
    x = images()
    body = json.loads(json.dumps(serving.rest_predict_request(images=x)))
    assert body["signature_name"] == "serving_default"
    specs = input_specs(signatures, body["signature_name"])
    assert len(body["instances"]) == 2
    for instance in body["instances"]:
        assert set(instance) == set(specs)
    # What TF Serving does with a row-format body: stack the instances per
    # input, as the input's dtype, and call the signature.
    inputs = {
        name: tf.constant(
            [instance[name] for instance in body["instances"]], spec.dtype
        )
        for name, spec in specs.items()
    }
    for name, spec in specs.items():
        assert spec.is_compatible_with(inputs[name])
    np.testing.assert_allclose(
        call(signatures, "serving_default", inputs),
        call(signatures, "serving_default", {"images": x}),
        atol=1e-6,
    )


def test_rest_bytes_request_matches_signature(signatures):
    files = encoded()
    body = json.loads(json.dumps(serving.rest_predict_request(None, files)))
    assert body["signature_name"] == "serving_bytes"
    specs = input_specs(signatures, body["signature_name"])
    assert list(specs) == ["image_bytes"]
    assert specs["image_bytes"].dtype == tf.string
    decoded = [
        base64.b64decode(instance["image_bytes"]["b64"])
        for instance in body["instances"]
    ]
    assert decoded == files
    logits = call(
        signatures, "serving_bytes", {"image_bytes": tf.constant(decoded)}
    )
    assert logits.shape == (2, 3)


@pytest.mark.parametrize("kind", ["images", "image_bytes"])
def test_grpc_request_matches_signature(signatures, kind):
    data = images(3) if kind == "images" else encoded(3)
    request = serving.grpc_predict_request("snas", version=2, **{kind: data})
    assert isinstance(request, predict_pb2.PredictRequest)
    assert request.model_spec.name == "snas"
    assert request.model_spec.version.value == 2
    signature = request.model_spec.signature_name
    specs = input_specs(signatures, signature)
    assert set(request.inputs) == set(specs) == {kind}
    # What TF Serving does: the TensorProto becomes the input tensor.
    proto = request.inputs[kind]
    assert proto.dtype == specs[kind].dtype.as_datatype_enum
    tensor = tf.constant(tf.make_ndarray(proto), specs[kind].dtype)
    assert specs[kind].is_compatible_with(tensor)
    assert tensor.shape[0] == 3
    np.testing.assert_array_equal(
        call(signatures, signature, {kind: tensor}),
        call(signatures, signature, {kind: tf.constant(data)}),
    )


def test_request_builders_reject_bad_inputs():
    builders = [
        serving.rest_predict_request,
        lambda **kw: serving.grpc_predict_request("snas", **kw),
    ]
    for build in builders:
        with pytest.raises(ValueError, match="exactly one .* got neither"):
            build()
        with pytest.raises(ValueError, match="got both"):
            build(images=images(), image_bytes=encoded())
        with pytest.raises(ValueError, match=r"got \(16, 16, 3\)"):
            build(images=images()[0])
        with pytest.raises(ValueError, match=r"got \(2, 16, 16, 1\)"):
            build(images=images()[..., :1])
        with pytest.raises(ValueError, match="got dtype uint8"):
            build(images=np.zeros((1, 16, 16, 3), "uint8"))
        with pytest.raises(ValueError, match="NaN"):
            build(images=np.full((1, 16, 16, 3), np.nan, "float32"))
        with pytest.raises(TypeError, match=r"image_bytes\[1\] must be bytes"):
            build(image_bytes=[b"\x89PNG", "cat.png"])
        with pytest.raises(ValueError, match=r"image_bytes\[0\] is empty"):
            build(image_bytes=[b""])
    with pytest.raises(ValueError, match="Invalid model name"):
        serving.grpc_predict_request("a/b", images=images())


def test_single_bytes_is_a_batch_of_one():
    (file,) = encoded(1)
    body = serving.rest_predict_request(image_bytes=file)
    assert len(body["instances"]) == 1
    request = serving.grpc_predict_request("snas", image_bytes=file)
    assert tf.make_ndarray(request.inputs["image_bytes"]).tolist() == [file]
