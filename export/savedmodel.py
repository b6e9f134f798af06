"""SavedModel export with a float and an encoded-image serving signature.

The SavedModel has two signatures, both returning
`{"logits": (N, K), "probabilities": (N, K)}` float32:

- `serving_default`: input `images`, float32 `(N, H, W, 3)`, already
  preprocessed as the eval pipeline does (`snas_tf.data.preprocess_eval`);
- `serving_bytes`: input `image_bytes`, string `(N,)` of encoded JPEG or PNG
  files (or GIF, BMP: whatever `tf.io.decode_image` reads; any size, grey
  or colour; a GIF's first frame), decoded, resized and
  normalised in-graph by `preprocess_eval` itself, so a served image sees
  exactly what the evaluation saw.

Bytes that do not decode fail the request with an `InvalidArgumentError`
naming the problem (unknown format, truncated data, empty string); the
graph never produces outputs for them. So do `images` of any shape but
`(N, S, S, 3)`: the error names the received and the expected shape.

Before it decodes anything, `serving_bytes` checks the request against
its `ServingLimits` (`export/limits.py`): the number of images, the bytes
of each, and the width x height each header declares (JPEG by
`tf.io.extract_jpeg_shape`, PNG, GIF and BMP from their fixed header
fields, as `snas_tf.image_headers` reads them), so a small file that
declares a huge image is refused instead of decoded. The error names the
image's index, its size and the limit. The images of a request are then
decoded one at a time, so a request's decoding holds one image at most.

It is written with `keras.export.ExportArchive`, whose `write_out` calls
`tf.saved_model.save`; `saved_model_cli` and TF Serving load it with
TensorFlow's C++ SavedModel loader.
"""

import os
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from snas_tf import image_headers
from snas_tf.data import preprocess_eval
from snas_tf.export import common
from snas_tf.export.limits import ServingLimits

SERVING_DEFAULT = "serving_default"
SERVING_BYTES = "serving_bytes"
IMAGES_INPUT = "images"
BYTES_INPUT = "image_bytes"
OUTPUT_KEYS = ("logits", "probabilities")


def _check_model(model, data_config) -> None:
    """Checks that `model` maps `(None, S, S, 3)` images, S from
    `data_config`, to logits `(None, K)`."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"Expected a model with one input and one output (logits), got "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs. "
            "For a child network with an auxiliary head, export "
            "`snas_tf.models.child_network.inference_model(model)`."
        )
    shape = tuple(model.inputs[0].shape)
    size = data_config.image_size
    if shape != (None, size, size, 3):
        raise ValueError(
            f"Model input shape {shape} does not match data.image_size "
            f"{size}: expected (None, {size}, {size}, 3)."
        )
    if len(model.outputs[0].shape) != 2:
        raise ValueError(
            f"Expected logits of shape (None, classes), got "
            f"{tuple(model.outputs[0].shape)}."
        )


def _outputs(logits):
    logits = tf.cast(logits, tf.float32)
    return {"logits": logits, "probabilities": tf.nn.softmax(logits)}


def _check(ok, message):
    """An op that fails the request with the text `message()` (a string
    tensor, built only then) when the scalar `ok` is False."""

    def fail():
        with tf.control_dependencies([tf.debugging.Assert(ok, [message()])]):
            return tf.identity(ok)

    return tf.cond(ok, lambda: ok, fail)


_HEAD = 26  # header bytes read: BMP's sizes end at byte 26


def _header_size(encoded):
    """int64 (width, height) that one encoded image's header declares;
    (0, 0) for an unknown format or a short header (the decoder then
    fails on it)."""
    padded = tf.strings.join([encoded, b"\0" * _HEAD])
    head = tf.io.decode_raw(tf.strings.substr(padded, 0, _HEAD), tf.uint8)
    head = tf.cast(head, tf.int64)

    def number(start, count, big_endian):
        digits = head[start : start + count]
        if big_endian:
            digits = digits[::-1]
        return tf.reduce_sum(digits * (256 ** tf.range(count, dtype=tf.int64)))

    def starts(signature):
        prefix = tf.strings.substr(encoded, 0, len(signature))
        return tf.equal(prefix, signature)

    def signed(value):  # a little-endian int32 (BMP), as TensorFlow reads
        return tf.abs(tf.where(value >= 2**31, value - 2**32, value))

    png = tf.stack([number(16, 4, True), number(20, 4, True)])
    gif = tf.stack([number(6, 2, False), number(8, 2, False)])
    bmp = tf.stack([signed(number(18, 4, False)), signed(number(22, 4, False))])
    none = tf.zeros([2], tf.int64)

    def jpeg():
        height, width = tf.unstack(tf.io.extract_jpeg_shape(encoded)[:2])
        return tf.cast(tf.stack([width, height]), tf.int64)

    size = tf.where(starts(image_headers.BMP_SIGNATURE), bmp, none)
    size = tf.where(starts(image_headers.GIF_SIGNATURE), gif, size)
    size = tf.where(starts(image_headers.PNG_SIGNATURE), png, size)
    is_jpeg = starts(image_headers.JPEG_SIGNATURE)
    return tf.cond(is_jpeg, jpeg, lambda: size)


def _check_request(image_bytes, limits):
    """The checks of `limits` on a batch of encoded images, in order:
    count, bytes, declared pixels; the last reads the headers only."""
    count = tf.size(image_bytes, out_type=tf.int64)
    check = _check(
        count <= limits.max_images,
        lambda: tf.strings.format(
            f"{{}} images in one request, over the limit of "
            f"{limits.max_images} (set by snas export --max-images)",
            (count,),
        ),
    )
    with tf.control_dependencies([check]):
        lengths = tf.strings.length(image_bytes)
    too_long = lengths > limits.max_image_bytes

    def too_long_message():
        first = tf.argmax(tf.cast(too_long, tf.int32))
        return tf.strings.format(
            f"{BYTES_INPUT}[{{}}] holds {{}} bytes, over the limit of "
            f"{limits.max_image_bytes} bytes per image (set by snas export "
            "--max-image-bytes)",
            (first, lengths[first]),
        )

    check = _check(tf.logical_not(tf.reduce_any(too_long)), too_long_message)
    with tf.control_dependencies([check]):
        sizes = tf.map_fn(
            _header_size,
            image_bytes,
            fn_output_signature=tf.TensorSpec([2], tf.int64),
        )
    too_large = sizes[:, 0] * sizes[:, 1] > limits.max_pixels

    def too_large_message():
        first = tf.argmax(tf.cast(too_large, tf.int32))
        width, height = tf.unstack(sizes[first])
        return tf.strings.format(
            f"{BYTES_INPUT}[{{}}] declares {{}}x{{}} pixels (width x "
            f"height), over the limit of {limits.max_pixels} pixels (set by "
            "snas export --max-pixels); not decoded",
            (first, width, height),
        )

    return _check(tf.logical_not(tf.reduce_any(too_large)), too_large_message)


def _decode_batch(image_bytes, data_config, limits):
    """Encoded images (N,) -> float32 (N, S, S, 3), as `preprocess_eval`,
    after the checks of `limits`."""
    size = data_config.image_size
    with tf.control_dependencies([_check_request(image_bytes, limits)]):
        image_bytes = tf.identity(image_bytes)
    # An empty string is the most likely malformed request; name it, and
    # check it before any decoding.
    check = tf.debugging.assert_positive(
        tf.strings.length(image_bytes),
        message=(
            f"{BYTES_INPUT} holds an empty string; expected encoded JPEG, "
            "PNG, GIF or BMP bytes"
        ),
    )
    with tf.control_dependencies([check]):
        image_bytes = tf.identity(image_bytes)

    def decode_one(encoded):
        # A file that does not decode raises InvalidArgumentError here
        # ("Unknown image file format", "Invalid PNG data", ...).
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return tf.ensure_shape(
            preprocess_eval(image, data_config), (size, size, 3)
        )

    return tf.map_fn(
        decode_one,
        image_bytes,
        fn_output_signature=tf.TensorSpec((size, size, 3), tf.float32),
        # One image at a time: a request holds one decoded image at most.
        parallel_iterations=1,
    )


def _endpoints(model, data_config, limits):
    """The two serving functions, traced.

    The bytes endpoint calls the float endpoint's concrete function, so the
    model is traced once for both signatures and they share its graph
    (tracing this network is most of the export's time).
    """
    size = data_config.image_size
    image_spec = tf.TensorSpec(
        (None, size, size, 3), tf.float32, name=IMAGES_INPUT
    )

    @tf.function(input_signature=[image_spec], autograph=False)
    def serve(images):
        # A loaded signature does not check its input shape (TF Serving
        # neither): without this, 16x16 images given to an 8x8 network
        # return logits of garbage, and other shapes fail deep in the
        # graph. EnsureShape names the received and expected shapes.
        images = tf.ensure_shape(images, (None, size, size, 3))
        return _outputs(model(images, training=False))

    serve_concrete = serve.get_concrete_function()
    bytes_spec = tf.TensorSpec((None,), tf.string, name=BYTES_INPUT)

    @tf.function(input_signature=[bytes_spec], autograph=False)
    def serve_bytes(image_bytes):
        return serve_concrete(_decode_batch(image_bytes, data_config, limits))

    serve_bytes.get_concrete_function()
    return serve, serve_bytes


def export_saved_model(
    model, directory, data_config, limits: ServingLimits | None = None
) -> None:
    """Writes `model` as a SavedModel with the two serving signatures.

    The directory is built in a hidden staging directory beside it and
    renamed into place, so it is complete or absent.

    Args:
        model: a Keras 3 functional inference model, float32 images
            `(None, S, S, 3)` -> logits `(None, K)`.
        directory: the SavedModel directory to create.
        data_config: the `snas_tf.config.DataConfig` the model was trained
            with (image size, normalisation, eval resizing).
        limits: the per-request `ServingLimits` of `serving_bytes` (None:
            the defaults).

    Raises:
        ValueError: if the model has more than one input or output, or its
            input shape does not match `data_config.image_size`.
        FileExistsError: if `directory` exists (nothing is overwritten).
    """
    _check_model(model, data_config)
    directory = os.fspath(directory)
    if os.path.exists(directory):
        raise FileExistsError(f"{directory!r} exists; not overwriting it.")
    serve, serve_bytes = _endpoints(
        model, data_config, limits or ServingLimits()
    )
    archive = keras.export.ExportArchive()
    # No `archive.track(model)`: the endpoints' variables are tracked from
    # their graphs anyway, and `track` only walks the model for lookup
    # tables (a child network has none). The walk traces the model's own
    # `_default_save_signature` and retraces the endpoints: without it the
    # export is much faster.
    archive.add_endpoint(SERVING_DEFAULT, serve)
    archive.add_endpoint(SERVING_BYTES, serve_bytes)
    parent = os.path.dirname(os.path.abspath(directory))
    stage = common.staging_dir(parent)
    try:
        archive.write_out(stage, verbose=False)
        common.publish_dir(stage, directory)
    finally:
        common.remove_quietly(stage)


def _runner(directory, signature, input_name, dtype):
    """Loads a SavedModel; returns inputs -> logits over one signature."""
    directory = os.fspath(directory)
    loaded = tf.saved_model.load(directory)
    if signature not in loaded.signatures:
        raise ValueError(
            f"SavedModel {directory!r} has no signature {signature!r}; it "
            f"has {sorted(loaded.signatures)}."
        )
    fn = loaded.signatures[signature]

    def run(inputs):
        # `loaded` owns the variables the signature reads: keep it alive.
        _ = loaded
        outputs = fn(**{input_name: tf.constant(inputs, dtype)})
        return outputs["logits"].numpy()

    return run


def saved_model_runner(directory) -> common.Runner:
    """A `Runner` over the `serving_default` signature of a SavedModel.

    Args:
        directory: a SavedModel written by `export_saved_model`.

    Returns:
        A callable from float32 images `(N, H, W, 3)`, preprocessed as
        `preprocess_eval` does, to float32 logits `(N, K)`.

    Raises:
        ValueError: if the SavedModel has no `serving_default` signature.
    """
    return _runner(directory, SERVING_DEFAULT, IMAGES_INPUT, tf.float32)


def bytes_runner(directory) -> Callable[[Sequence[bytes]], np.ndarray]:
    """A runner over the `serving_bytes` signature of a SavedModel.

    Args:
        directory: a SavedModel written by `export_saved_model`.

    Returns:
        A callable from a sequence of encoded images (bytes) to float32
        logits `(N, K)`. It raises `tf.errors.InvalidArgumentError` for
        bytes that do not decode, as the signature does.

    Raises:
        ValueError: if the SavedModel has no `serving_bytes` signature.
    """
    return _runner(directory, SERVING_BYTES, BYTES_INPUT, tf.string)
