"""TF Serving: the model-server layout, its config, and client requests.

Layout (what `tensorflow_model_server --model_config_file` reads):

    serving_root/
      models.config            model_config_list, base paths /models/<name>
      <model_name>/<version>/  a SavedModel; version = 1, 2, ... never reused

A version directory appears in one rename of a complete copy, so the model
server, which polls the model directory, never sees a half-written version,
and a killed copy leaves only a hidden `.tmp-export-*` directory that the
server and `next_version` ignore.

Requests follow the signatures of `snas_tf.export.savedmodel`: REST
`POST /v1/models/<name>:predict` with `{"signature_name", "instances"}`
(encoded images as `{"b64": ...}`), and gRPC `PredictionService/Predict`
with a `tensorflow_serving.apis.predict_pb2.PredictRequest`. With the
usual Docker image, `serving_root` is mounted at `/models`:

    docker run -p 8500:8500 -p 8501:8501 -v "$PWD/OUT/serving:/models" \\
      tensorflow/serving --model_config_file=/models/models.config
"""

import base64
import errno
import os
import re
import shutil
from collections.abc import Sequence

import numpy as np

from snas_tf.atomic_files import write_atomic
from snas_tf.export import common
from snas_tf.export.savedmodel import (
    BYTES_INPUT,
    IMAGES_INPUT,
    SERVING_BYTES,
    SERVING_DEFAULT,
)

MODELS_CONFIG = "models.config"
# Where the model server sees `serving_root` (the Docker image's default).
DEFAULT_BASE_PATH = "/models"
# TF Serving takes directories named by a non-negative integer as versions.
_VERSION = re.compile(r"[0-9]+")
# A model name is a directory, a models.config entry and a URL path segment
# (`/v1/models/<name>:predict`), so no spaces, slashes or colons.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Attempts to claim a version number when another writer takes it first.
_PUBLISH_ATTEMPTS = 5


def check_model_name(name) -> str:
    """Returns `name` if it can name a served model.

    Raises:
        ValueError: naming `name` and the allowed characters.
    """
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise ValueError(
            f"Invalid model name {name!r}: use letters, digits, '_', '.' "
            "and '-', starting with a letter or digit (it is a directory "
            "and a URL path segment)."
        )
    return name


def _versions(model_root) -> list[int]:
    if not os.path.isdir(model_root):
        return []
    return [
        int(entry.name)
        for entry in os.scandir(model_root)
        if entry.is_dir() and _VERSION.fullmatch(entry.name)
    ]


def next_version(model_root) -> int:
    """The version number the next export of a model gets.

    Args:
        model_root: `serving_root/<model_name>` (need not exist).

    Returns:
        One more than the largest integer-named subdirectory, or 1. Hidden
        staging directories and other names are ignored.
    """
    return max(_versions(model_root), default=0) + 1


def write_serving_layout(
    saved_model_dir, serving_root, model_name, version=None
) -> str:
    """Copies a SavedModel into `serving_root/<model_name>/<version>/`.

    The copy is built in a hidden directory under the model directory and
    renamed to its version: a new directory every time, never an existing
    one, and never a partial one.

    Args:
        saved_model_dir: a SavedModel directory (holds `saved_model.pb`).
        serving_root: the model server's base directory.
        model_name: the served model's name (`check_model_name`).
        version: the version to create; None: the next free one
            (`next_version`), retried if another writer takes it first.

    Returns:
        The new version directory.

    Raises:
        ValueError: for a directory without `saved_model.pb`, an invalid
            model name or a version that is not an int >= 0.
        FileExistsError: if `version` exists, or other writers took every
            version tried.
    """
    saved_model_dir = os.fspath(saved_model_dir)
    check_model_name(model_name)
    if version is not None:
        _check_version(version)
    if not os.path.isfile(os.path.join(saved_model_dir, "saved_model.pb")):
        raise ValueError(
            f"{saved_model_dir!r} is not a SavedModel directory (no "
            "saved_model.pb)."
        )
    model_root = os.path.join(os.fspath(serving_root), model_name)
    stage = common.staging_dir(model_root)
    try:
        shutil.copytree(saved_model_dir, stage, dirs_exist_ok=True)
        if version is not None:
            final = os.path.join(model_root, str(version))
            common.publish_dir(stage, final)
            return final
        for _ in range(_PUBLISH_ATTEMPTS):
            final = os.path.join(model_root, str(next_version(model_root)))
            try:
                common.publish_dir(stage, final)
                return final
            except OSError as e:
                # Another writer published this version between our look
                # and our rename (rename onto a non-empty directory fails).
                if not isinstance(e, FileExistsError) and e.errno not in (
                    errno.EEXIST,
                    errno.ENOTEMPTY,
                ):
                    raise
        raise FileExistsError(
            f"Could not claim a new version under {model_root!r} in "
            f"{_PUBLISH_ATTEMPTS} attempts (concurrent writers?)."
        )
    finally:
        common.remove_quietly(stage)


def served_models(serving_root) -> list[str]:
    """The model directories under `serving_root` with a version, sorted."""
    root = os.fspath(serving_root)
    if not os.path.isdir(root):
        return []
    return sorted(
        entry.name
        for entry in os.scandir(root)
        if entry.is_dir()
        and _MODEL_NAME.fullmatch(entry.name)
        and _versions(entry.path)
    )


def models_config_text(model_names, base_path=DEFAULT_BASE_PATH) -> str:
    """The `ModelServerConfig` text proto serving `model_names`."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for name in model_names:
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = f"{base_path.rstrip('/')}/{name}"
        entry.model_platform = "tensorflow"
    return text_format.MessageToString(config)


def write_models_config(
    serving_root, model_names=None, base_path=DEFAULT_BASE_PATH
) -> str:
    """Writes `serving_root/models.config` atomically.

    Args:
        serving_root: the model server's base directory.
        model_names: models to serve, each with at least one version under
            `serving_root`; None: every such model (`served_models`).
        base_path: where the server sees `serving_root` (`/models` in the
            TF Serving Docker image).

    Returns:
        The path written.

    Raises:
        ValueError: for no models, a duplicate or invalid name, or a name
            with no version directory under `serving_root`.
    """
    root = os.fspath(serving_root)
    if model_names is None:
        model_names = served_models(root)
    elif isinstance(model_names, str):
        model_names = [model_names]
    model_names = list(model_names)
    if not model_names:
        raise ValueError(f"No models to serve under {root!r}.")
    for name in model_names:
        check_model_name(name)
        if not _versions(os.path.join(root, name)):
            raise ValueError(
                f"Model {name!r} has no version directory under {root!r}; "
                "call write_serving_layout first."
            )
    duplicates = sorted({n for n in model_names if model_names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Duplicate model names {duplicates}.")
    path = os.path.join(root, MODELS_CONFIG)
    write_atomic(path, models_config_text(model_names, base_path))
    return path


def rest_url(host, port, model_name, version=None) -> str:
    """The REST predict URL of a served model.

    Args:
        host: server host name or address.
        port: REST port (8501 by default in TF Serving).
        model_name: the served model's name.
        version: a specific version; None for the latest.

    Returns:
        `http://<host>:<port>/v1/models/<name>[/versions/<v>]:predict`.
    """
    check_model_name(model_name)
    if isinstance(port, bool) or not isinstance(port, int) or port <= 0:
        raise ValueError(f"port must be a positive int, got {port!r}.")
    path = f"/v1/models/{model_name}"
    if version is not None:
        path += f"/versions/{_check_version(version)}"
    return f"http://{host}:{port}{path}:predict"


def _check_version(version) -> int:
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"version must be an int, got {version!r}.")
    if version < 0:
        raise ValueError(f"version must be >= 0, got {version!r}.")
    return version


def _check_images(images) -> np.ndarray:
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(
            f"images must have shape (N, H, W, 3), got {array.shape}."
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"images must be float (preprocessed as the eval pipeline "
            f"does), got dtype {array.dtype}; send raw pixels as encoded "
            "image_bytes instead."
        )
    if array.shape[0] == 0:
        raise ValueError("images is an empty batch (N = 0).")
    if not np.all(np.isfinite(array)):
        raise ValueError("images contains NaN or infinite values.")
    return array.astype(np.float32)


def _check_bytes(image_bytes) -> list[bytes]:
    if isinstance(image_bytes, bytes | bytearray):
        image_bytes = [image_bytes]
    if isinstance(image_bytes, str) or not isinstance(image_bytes, Sequence):
        raise TypeError(
            "image_bytes must be bytes or a sequence of bytes (encoded "
            f"images), got {type(image_bytes).__name__}."
        )
    if not image_bytes:
        raise ValueError("image_bytes is an empty batch.")
    for i, item in enumerate(image_bytes):
        if not isinstance(item, bytes | bytearray):
            raise TypeError(
                f"image_bytes[{i}] must be bytes (an encoded image file's "
                f"contents), got {type(item).__name__}."
            )
        if not item:
            raise ValueError(f"image_bytes[{i}] is empty.")
    return [bytes(item) for item in image_bytes]


def _one_of(images, image_bytes):
    if (images is None) == (image_bytes is None):
        raise ValueError(
            "Pass exactly one of images (float, preprocessed) or "
            "image_bytes (encoded images); got "
            + ("both." if images is not None else "neither.")
        )
    if images is not None:
        return SERVING_DEFAULT, IMAGES_INPUT, _check_images(images)
    return SERVING_BYTES, BYTES_INPUT, _check_bytes(image_bytes)


def rest_predict_request(images=None, image_bytes=None) -> dict:
    """The JSON body of a TF Serving REST predict request (row format).

    Args:
        images: float images `(N, H, W, 3)`, preprocessed as the eval
            pipeline does, for `serving_default`.
        image_bytes: encoded images (bytes, or a sequence of them) for
            `serving_bytes`; sent base64-encoded as `{"b64": ...}`.

    Returns:
        `{"signature_name": ..., "instances": [{input_name: value}, ...]}`
        for `POST /v1/models/<name>:predict` (see `rest_url`).

    Raises:
        ValueError: unless exactly one of the two is given, or for images
            not of shape (N, H, W, 3), not float, empty or not finite.
        TypeError: for image_bytes that are not bytes.
    """
    signature, name, values = _one_of(images, image_bytes)
    if signature == SERVING_DEFAULT:
        instances = [{name: image.tolist()} for image in values]
    else:
        instances = [
            {name: {"b64": base64.b64encode(item).decode("ascii")}}
            for item in values
        ]
    return {"signature_name": signature, "instances": instances}


def grpc_predict_request(
    model_name, images=None, image_bytes=None, version=None
):
    """A gRPC `PredictRequest` for `PredictionService.Predict`.

    Args:
        model_name: the served model's name.
        images: float images `(N, H, W, 3)`, preprocessed, for
            `serving_default` (sent as DT_FLOAT).
        image_bytes: encoded images for `serving_bytes` (DT_STRING).
        version: a specific version; None for the latest.

    Returns:
        A `tensorflow_serving.apis.predict_pb2.PredictRequest`.

    Raises:
        ValueError: as `rest_predict_request`, or for an invalid model name
            or version.
        TypeError: for image_bytes that are not bytes.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    check_model_name(model_name)
    signature, name, values = _one_of(images, image_bytes)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = _check_version(version)
    if signature == SERVING_DEFAULT:
        proto = tf.make_tensor_proto(values, dtype=tf.float32)
    else:
        proto = tf.make_tensor_proto(
            values, dtype=tf.string, shape=[len(values)]
        )
    request.inputs[name].CopyFrom(proto)
    return request
