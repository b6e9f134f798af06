"""ONNX export of a child network through tf2onnx, run with onnxruntime.

The Keras model is traced as a `tf.function` whose input signature leaves
the batch dimension free, converted with `tf2onnx.convert.from_function`
(docs/tensorflow-notes.md §6: `from_function`, `from_keras` and
`model.export(format="onnx")` all run; `from_function` keeps the input
name and the dynamic batch under our control), checked with
`onnx.checker` and written atomically.

This module is `snas_tf.export.onnx`; `import onnx` below is an absolute
import and so loads the real `onnx` package, not this file.
"""

import os
import secrets

import numpy as np
import onnx
import onnxruntime
import tensorflow as tf
import tf2onnx

from snas_tf.export.common import Runner, remove_quietly

# Opset 17 is the first with LayerNormalization and the one verified
# (docs/tensorflow-notes.md §6); the newest is whatever the installed
# tf2onnx knows.
MIN_OPSET = 17
MAX_OPSET = max(tf2onnx.constants.OPSET_TO_IR_VERSION)
OUTPUT_NAME = "logits"


def _check_model(model) -> None:
    """Rejects models that are not one-image-in, logits-out."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"Expected a model with one input and one output (logits), got "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs. "
            "For a child network with an auxiliary head, export "
            "`inference_model(model)`."
        )


def _check_opset(opset) -> None:
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError(f"opset must be an int, got {opset!r}.")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"Unsupported ONNX opset {opset}. Expected one of "
            f"{list(range(MIN_OPSET, MAX_OPSET + 1))}."
        )


def _convert(model, opset: int) -> onnx.ModelProto:
    """Traces `model` with a dynamic batch and converts it to ONNX."""
    keras_input = model.inputs[0]
    spec = tf.TensorSpec(
        (None, *keras_input.shape[1:]), tf.float32, name=keras_input.name
    )

    @tf.function(input_signature=[spec])
    def serve(images):
        return model(images, training=False)

    proto, _ = tf2onnx.convert.from_function(
        serve, input_signature=[spec], opset=opset
    )
    _rename_output(proto.graph, OUTPUT_NAME)
    return proto


def _rename_output(graph, name: str) -> None:
    """Names the single graph output `name` (tf2onnx calls it
    `Identity:0`, after the traced function's last op)."""
    old = graph.output[0].name
    for node in graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
        node.input[:] = [name if i == old else i for i in node.input]
    graph.output[0].name = name


def _default_opset(proto) -> int:
    """The opset of the default (`ai.onnx`) domain."""
    return next(
        o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")
    )


def _describe(values) -> list:
    return [v.name for v in values]


def export_onnx(model, path, opset: int = 17) -> dict:
    """Writes `model` as an ONNX file with a dynamic batch dimension.

    The file is built next to `path` under a hidden temporary name, checked
    with `onnx.checker.check_model`, then moved to `path` with
    `os.replace`: on any failure nothing is left at `path` (or what was
    there stays), and no temporary file remains.

    Args:
        model: a Keras 3 functional inference model with one input,
            float32 images `(None, H, W, 3)`, and one output, the logits
            (a child network built with `auxiliary=False`, or
            `inference_model(...)` of one).
        path: the `.onnx` file to write; its directory is created.
        opset: ONNX opset of the default domain, at least 17.

    Returns:
        A JSON-able dict: `opset` (int, read back from the graph),
        `inputs` and `outputs` (graph input and output names, e.g.
        `["images"]` and `["logits"]`).

    Raises:
        ValueError: if `opset` is outside the supported range or the model
            does not have exactly one input and one output.
        TypeError: if `opset` is not an int.
    """
    _check_opset(opset)
    _check_model(model)
    path = os.fspath(path)
    proto = _convert(model, opset)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    # Opened with "x" (not mkstemp) so the file gets the usual umask
    # permissions, which os.replace keeps.
    tmp = os.path.join(
        parent, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp"
    )
    try:
        with open(tmp, "xb") as f:
            f.write(proto.SerializeToString())
        onnx.checker.check_model(tmp, full_check=True)
        os.replace(tmp, path)
    finally:
        remove_quietly(tmp)
    return {
        "opset": _default_opset(proto),
        "inputs": _describe(proto.graph.input),
        "outputs": _describe(proto.graph.output),
    }


def onnx_runner(path, num_threads: int = 1) -> Runner:
    """Loads an ONNX file into onnxruntime on the CPU.

    Args:
        path: a file written by `export_onnx`.
        num_threads: onnxruntime intra-op threads (1 gives reproducible
            single-core timings).

    Returns:
        A `Runner`: float32 images `(N, H, W, 3)` -> float32 logits
        `(N, K)`, for any batch size N.

    Raises:
        TypeError: if `num_threads` is not an int.
        ValueError: if `num_threads` is below 1.
    """
    if isinstance(num_threads, bool) or not isinstance(num_threads, int):
        raise TypeError(f"num_threads must be an int, got {num_threads!r}.")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}.")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        os.fspath(path), options, providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name

    def run(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        (logits,) = session.run(None, {input_name: images})
        return np.asarray(logits, dtype=np.float32)

    return run
