"""TensorFlow Lite export: float32, float16, dynamic-range and full int8.

`convert_tflite` turns a Keras 3 child network (logits output) into a
`.tflite` flatbuffer in one of `TFLITE_MODES`:

- `"fp32"`: float32 weights and activations, equal to Keras up to float
  rounding;
- `"fp16"`: float16 weights, float32 compute;
- `"dynamic"`: dynamic-range quantisation, int8 weights (TFLite leaves
  tensors of fewer than 1,024 elements in float32), float activations;
- `"int8"`: full integer quantisation, int8 weights, activations, input and
  output, calibrated on a representative dataset (images from the eval
  pipeline, `snas_tf.data.preprocess_eval`).

The model reaches the converter as a SavedModel of its inference function
with the variables frozen to constants (`write_frozen_saved_model`):
`from_concrete_functions` gives NaN for these models
(docs/tensorflow-notes.md §6), and
the SavedModel of `model.export` (what `from_keras_model` writes for a
Keras 3 model) took about 4x as long to write and to convert.

`tflite_runner` runs a file with `ai_edge_litert` (the maintained TFLite
runtime), or `tf.lite.Interpreter` where that is not installed; it
quantises float inputs and dequantises int8 outputs with the tensors'
scale and zero point, so every runner maps float images to float logits.
"""

import os
import tempfile

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import convert_to_constants

from snas_tf.export.common import Artifact, Runner

TFLITE_MODES = ("fp32", "fp16", "dynamic", "int8")
# Input name in the intermediate SavedModel.
_INPUT_NAME = "images"


def interpreter_backend() -> str:
    """The TFLite runtime `tflite_runner` uses.

    Returns:
        `"ai_edge_litert"` when `ai_edge_litert` imports, else `"tf.lite"`.
    """
    return _interpreter_class()[1]


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        # tf.lite.Interpreter warns it is deprecated, but gives identical
        # outputs (docs/tensorflow-notes.md §6).
        return tf.lite.Interpreter, "tf.lite"
    return Interpreter, "ai_edge_litert"


def _check_mode(mode):
    if mode not in TFLITE_MODES:
        raise ValueError(
            f"Unknown TFLite mode {mode!r}. Expected one of {TFLITE_MODES}."
        )


def _image_shape(model):
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"TFLite export needs a model with one input and one output "
            f"(logits); {model.name!r} has {len(model.inputs)} inputs and "
            f"{len(model.outputs)} outputs. Pass "
            "snas_tf.models.child_network.inference_model(model)."
        )
    return tuple(model.inputs[0].shape[1:])


def _check_images(images, image_shape):
    if images is None or len(images) == 0:
        raise ValueError(
            "TFLite mode 'int8' needs representative_images: a float32 "
            f"array (N, {', '.join(map(str, image_shape))}) of eval-"
            "preprocessed images to calibrate the activation ranges."
        )
    images = np.asarray(images, dtype=np.float32)
    if images.shape[1:] != image_shape:
        raise ValueError(
            f"representative_images have shape {images.shape}; the model "
            f"takes (N, {', '.join(map(str, image_shape))})."
        )
    return images


def write_frozen_saved_model(model, path, image_shape) -> None:
    """Writes a SavedModel of `model`'s inference function with its
    variables frozen to constants: one `serving_default` signature, float32
    images `(None, *image_shape)` -> float32 logits, and no variables.

    The converter's own freezing (`from_concrete_functions`) gives NaN for
    these Keras 3 models (docs/tensorflow-notes.md §6); freezing first and
    converting the frozen SavedModel gives the Keras logits up to float
    rounding and is the fastest route: no variables checkpoint to write
    and read (slow for the QAT twin's hundreds of variables).

    Args:
        model: a Keras 3 or tf_keras model with one input and one output.
        path: directory to write.
        image_shape: (H, W, C) of one input image.
    """

    # No AutoGraph: a functional model's call has no tensor-dependent
    # Python control flow, and converting every layer's `call` (TFMOT
    # wraps each one) is slow.
    @tf.function(
        input_signature=[
            tf.TensorSpec((None, *image_shape), tf.float32, name=_INPUT_NAME)
        ],
        autograph=False,
    )
    def serve(images):
        return tf.cast(model(images, training=False), tf.float32)

    # TensorFlow exports this only under tensorflow.python; it is what the
    # TFLite converter itself freezes with.
    frozen = convert_to_constants.convert_variables_to_constants_v2(
        serve.get_concrete_function()
    )
    tf.saved_model.save(
        tf.Module(), path, signatures={"serving_default": frozen}
    )


def _configure(converter, mode, images):
    if mode == "fp32":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        converter.representative_dataset = _representative_dataset(images)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        ]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8


def _representative_dataset(images):
    def generate():
        for image in images:
            yield [image[None]]

    return generate


def convert_tflite(model, mode: str, representative_images=None) -> bytes:
    """Converts a Keras 3 inference model to a TFLite flatbuffer.

    Args:
        model: Keras 3 functional model, images -> logits (one output; see
            `snas_tf.models.child_network.inference_model`).
        mode: one of `TFLITE_MODES`.
        representative_images: float32 `(N, H, W, 3)`, preprocessed as the
            eval pipeline does; required for `"int8"`, where every image is
            one calibration sample (a few dozen to a few hundred suffice),
            and ignored by the other modes.

    Returns:
        The `.tflite` file's bytes. Its input takes a batch of any size.

    Raises:
        ValueError: for an unknown mode, a model with several inputs or
            outputs, or `"int8"` without representative images (or with
            images of the wrong shape).
    """
    _check_mode(mode)
    image_shape = _image_shape(model)
    images = None
    if mode == "int8":
        images = _check_images(representative_images, image_shape)
    with tempfile.TemporaryDirectory(prefix="snas-tflite-") as tmp:
        write_frozen_saved_model(model, tmp, image_shape)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        _configure(converter, mode, images)
        return converter.convert()


def _quantize(x, detail):
    scale, zero_point = detail["quantization"]
    dtype = detail["dtype"]
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    if scale == 0:
        raise ValueError(
            f"Input {detail['name']!r} is {np.dtype(dtype).name} without "
            "quantisation parameters."
        )
    info = np.iinfo(dtype)
    q = np.round(x / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(y, detail):
    scale, zero_point = detail["quantization"]
    if np.issubdtype(y.dtype, np.integer) and scale != 0:
        return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return y.astype(np.float32)


def make_interpreter(path, num_threads: int = 1):
    """An interpreter of `interpreter_backend()` for a `.tflite` file.

    Args:
        path: the `.tflite` file.
        num_threads: interpreter threads.

    Returns:
        An `ai_edge_litert.interpreter.Interpreter` (or `tf.lite.Interpreter`)
        with its tensors not yet allocated.
    """
    interpreter_class, _ = _interpreter_class()
    return interpreter_class(
        model_path=os.fspath(path), num_threads=num_threads
    )


def tflite_runner(path, num_threads: int = 1) -> Runner:
    """Loads a `.tflite` file as a `Runner`: float images -> float logits.

    Float inputs are quantised and int8 outputs dequantised with the
    tensors' own scale and zero point. A batch of N runs at once when the
    input's batch dimension is dynamic (the input is resized to N), else
    image by image.

    Args:
        path: the `.tflite` file.
        num_threads: interpreter threads.

    Returns:
        A callable from float32 `(N, H, W, 3)` to float32 logits `(N, K)`.
        It holds one interpreter and is not thread-safe.
    """
    interpreter = make_interpreter(path, num_threads)
    input_detail = interpreter.get_input_details()[0]
    output_index = interpreter.get_output_details()[0]["index"]
    dynamic_batch = input_detail["shape_signature"][0] == -1
    state = {"batch": None}

    def invoke(images):
        if state["batch"] != len(images):
            interpreter.resize_tensor_input(
                input_detail["index"], [len(images), *images.shape[1:]]
            )
            interpreter.allocate_tensors()
            state["batch"] = len(images)
        interpreter.set_tensor(
            input_detail["index"], _quantize(images, input_detail)
        )
        interpreter.invoke()
        # Output details (the quantisation) are read after allocation.
        detail = next(
            d
            for d in interpreter.get_output_details()
            if d["index"] == output_index
        )
        return _dequantize(interpreter.get_tensor(output_index), detail)

    def run(images):
        images = np.asarray(images, dtype=np.float32)
        if dynamic_batch:
            return invoke(images)
        return np.concatenate([invoke(image[None]) for image in images])

    return run


def export_tflite(
    model,
    path,
    mode: str = "fp32",
    representative_images=None,
    num_threads: int = 1,
) -> Artifact:
    """Converts `model` (see `convert_tflite`) and writes `path`.

    Args:
        model: Keras 3 inference model, images -> logits.
        path: the `.tflite` file to write (its directory is created).
        mode: one of `TFLITE_MODES`.
        representative_images: calibration images, required for `"int8"`.
        num_threads: threads of the returned runner's interpreter.

    Returns:
        An `Artifact` named `tflite_<mode>`; `quantized` (judged by top-1
        agreement) for every mode but `"fp32"`: float16 weights and
        dynamic-range int8 are not float paths either.

    Raises:
        ValueError: as `convert_tflite`.
    """
    flatbuffer = convert_tflite(model, mode, representative_images)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(flatbuffer)
    return Artifact(
        name=f"tflite_{mode}",
        path=os.fspath(path),
        runner=tflite_runner(path, num_threads=num_threads),
        quantized=mode != "fp32",
        notes={"interpreter": interpreter_backend(), "bytes": len(flatbuffer)},
    )


__all__ = [
    "TFLITE_MODES",
    "convert_tflite",
    "export_tflite",
    "interpreter_backend",
    "make_interpreter",
    "tflite_runner",
    "write_frozen_saved_model",
]
