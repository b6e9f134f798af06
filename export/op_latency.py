"""TFLite conversion and LiteRT timing of the latency table's op models.

`convert_op_model` converts one tiny model of `snas_tf.latency.op_models`
(batch 1, any number of inputs) the way `export.tflite` converts the child
network: a SavedModel of the inference function with its variables frozen
(docs/tensorflow-notes.md §6), then `TFLiteConverter.from_saved_model`;
`int8` is full integer quantisation calibrated on random N(0, 1) inputs.
`time_op_model` runs it with LiteRT (`export.tflite.make_interpreter`:
`ai_edge_litert`, or `tf.lite` without it) and returns the median of
`runs` invocations after `warmup`, in microseconds, by the wall clock or
the invoking thread's CPU clock (`CLOCKS`). It lives in `export/`
because the library (`snas_tf/`) imports no exporter.
"""

import os
import platform
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import convert_to_constants

from snas_tf.export.tflite import interpreter_backend, make_interpreter
from snas_tf.latency.table import CLOCKS, FORMATS

# Calibration samples of an int8 conversion.
CALIBRATION_SAMPLES = 8


def _check_format(fmt):
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}. Expected one of {FORMATS}.")


def convert_op_model(model, fmt: str = "fp32", seed: int = 0) -> bytes:
    """Converts a batch-1 Keras model to a `.tflite` flatbuffer.

    Args:
        model: a Keras 3 functional model with static input shapes.
        fmt: one of `FORMATS`.
        seed: seed of the int8 calibration inputs.

    Returns:
        The flatbuffer's bytes.

    Raises:
        ValueError: for an unknown format.
    """
    _check_format(fmt)
    specs = [
        tf.TensorSpec(tuple(x.shape), tf.float32, name=f"input_{i}")
        for i, x in enumerate(model.inputs)
    ]

    @tf.function(input_signature=specs, autograph=False)
    def serve(*inputs):
        args = list(inputs) if len(inputs) > 1 else inputs[0]
        return tf.cast(model(args, training=False), tf.float32)

    frozen = convert_to_constants.convert_variables_to_constants_v2(
        serve.get_concrete_function()
    )
    with tempfile.TemporaryDirectory(prefix="snas-op-") as tmp:
        tf.saved_model.save(
            tf.Module(), tmp, signatures={"serving_default": frozen}
        )
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        if fmt == "int8":
            rng = np.random.default_rng(seed)

            def calibration():
                for _ in range(CALIBRATION_SAMPLES):
                    yield [
                        rng.normal(size=s.shape).astype("float32")
                        for s in specs
                    ]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = calibration
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8
            ]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        return converter.convert()


def _fill_inputs(interpreter, rng):
    for detail in interpreter.get_input_details():
        dtype = detail["dtype"]
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            data = rng.integers(info.min, info.max, detail["shape"], dtype)
        else:
            data = rng.normal(size=detail["shape"]).astype(dtype)
        interpreter.set_tensor(detail["index"], data)


def check_clock(clock, threads) -> None:
    """Raises ValueError for an unknown clock, or "cpu" with threads > 1
    (the work of the other threads would not be counted)."""
    if clock not in CLOCKS:
        raise ValueError(f"Unknown clock {clock!r}. Expected one of {CLOCKS}.")
    if clock == "cpu" and threads != 1:
        raise ValueError(
            f"clock 'cpu' times the invoking thread only; it needs 1 "
            f"thread, got {threads}."
        )


def time_op_model(
    path, threads=1, runs=50, warmup=5, seed=0, clock="wall"
) -> float:
    """The median latency of one `.tflite` file under LiteRT, in µs.

    Args:
        path: the `.tflite` file.
        threads: interpreter threads.
        runs: timed invocations (the median is returned).
        warmup: untimed invocations first.
        seed: seed of the random inputs.
        clock: "wall" (`time.perf_counter_ns`) or "cpu" (the calling
            thread's CPU time, `time.thread_time_ns`: with one thread the
            interpreter runs in it, and time the scheduler gives other
            jobs is not counted).

    Returns:
        The median of `runs` timings of `interpreter.invoke()`, in µs.

    Raises:
        ValueError: for a bad `clock` (`check_clock`).
    """
    check_clock(clock, threads)
    now = time.perf_counter_ns if clock == "wall" else time.thread_time_ns
    interpreter = make_interpreter(path, threads)
    interpreter.allocate_tensors()
    _fill_inputs(interpreter, np.random.default_rng(seed))
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = now()
        interpreter.invoke()
        times.append((now() - start) / 1e3)
    return float(statistics.median(times))


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else `platform`)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def runtime_info() -> dict:
    """The runtime's name and version (LiteRT's `ai_edge_litert`, or
    TensorFlow's `tf.lite`), the CPU model and the machine's core count."""
    name = interpreter_backend()
    if name == "ai_edge_litert":
        from importlib.metadata import version

        runtime_version = version("ai-edge-litert")
    else:
        runtime_version = tf.__version__
    return {
        "name": name,
        "version": runtime_version,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
    }


__all__ = [
    "CLOCKS",
    "FORMATS",
    "check_clock",
    "convert_op_model",
    "cpu_model",
    "runtime_info",
    "time_op_model",
]
