"""Benchmark: batch-1 inference latency of the exported child network.

For each setting, one subprocess builds the inference network (fresh
weights, seed 0, no auxiliary head, no drop-path) with the export
command's own `load_source` and writes, into a temporary directory, the
files the export command would: `model.keras`, TFLite float32 and full
int8 (`convert_tflite`; int8 calibrated on random N(0, 1) images: the
export command's fallback when no data set is at hand) and ONNX
(`export_onnx`). Then every format is timed in its own fresh subprocess
(so peak RSS is that runtime's own; every one imports TensorFlow, ~0.56
GB, because the project's runners live in modules that import it):

    keras        `keras.saving.load_model`, then `model(x, training=False)`
                 in a `tf.function` (no AutoGraph, fixed (1, S, S, 3)
                 signature), output fetched with `.numpy()`
    tflite_fp32  `tflite_runner` (ai_edge_litert, or tf.lite without it)
    tflite_int8  `tflite_runner` (float in, quantised in the runner)
    onnx         `onnx_runner` (onnxruntime, CPU provider)

Reported per format: median (and p90, min) latency in ms of N batch-1
runs after warm-up, load and first-run seconds, file bytes, the
conversion's seconds, peak RSS and the achieved GFLOP/s (2 x multiply-adds
/ latency; int8 counted as if FLOP). `--threads` (default 1) is every
runtime's thread count (TensorFlow: intra-op, with 1 inter-op thread).

Settings (SNAS_moderate):
    mobile: ImageNet mobile, 14 cells, 48 channels, 224x224, 1000 classes
    cifar:  20 cells, 36 channels, 32x32, 10 classes

Usage:
    python benchmarks/export_latency.py [--settings mobile cifar]
        [--formats keras tflite_fp32 tflite_int8 onnx] [--runs 50]
        [--warmup 5] [--threads 1] [--calibration-images 32]
        [--quick] [--cells N] [--channels C] [--image-size S]
"""

import argparse
import os
import sys
import tempfile
import time

import harness

# Mobile first: it is the setting that the latency is about.
SETTINGS = {k: harness.CHILD_SETTINGS[k] for k in ("mobile", "cifar")}
FORMATS = ("keras", "tflite_fp32", "tflite_int8", "onnx")
FILES = {
    "keras": "model.keras",
    "tflite_fp32": "model_fp32.tflite",
    "tflite_int8": "model_int8.tflite",
    "onnx": "model.onnx",
}
_QUICK_CALIBRATION = 4


def _prepare(setting, args):
    """Builds the network and writes every format into `args.workdir`."""
    import numpy as np

    harness.import_tensorflow(args.threads, 1)
    import keras

    from snas_tf.export import onnx, tflite
    from snas_tf.export.exporter import load_source
    from snas_tf.models import count_parameters, multiply_adds

    s = harness.sizes(SETTINGS[setting], args)
    keras.utils.set_random_seed(0)
    source = load_source(
        genotype=s["genotype"],
        config_paths=[harness.REPO / s["config"]],
        overrides=[
            f"child.network={s['network']}",
            f"child.num_layers={s['num_cells']}",
            f"child.channels={s['channels']}",
            f"data.image_size={s['image_size']}",
        ],
    )
    model = source.model
    side = s["image_size"]
    rng = np.random.default_rng(0)
    calibration = rng.normal(
        size=(args.calibration_images, side, side, 3)
    ).astype("float32")

    def write(name):
        path = os.path.join(args.workdir, FILES[name])
        if name == "keras":
            model.save(path)
        elif name == "onnx":
            onnx.export_onnx(model, path)
        else:
            mode = name.removeprefix("tflite_")
            blob = tflite.convert_tflite(model, mode, calibration)
            with open(path, "wb") as f:
                f.write(blob)

    convert = {}
    for name in args.formats:
        start = time.perf_counter()
        write(name)
        convert[name] = round(time.perf_counter() - start, 2)
    return {
        "setting": setting,
        "genotype": s["genotype"],
        "network": s["network"],
        "num_cells": s["num_cells"],
        "channels": s["channels"],
        "image_size": side,
        "num_classes": int(model.outputs[0].shape[-1]),
        "parameters": count_parameters(model),
        "multiply_adds_per_image": multiply_adds(model),
        "calibration_images": args.calibration_images,
        "convert_seconds": convert,
        "tflite_backend": tflite.interpreter_backend(),
    }


def _keras_runner(path, image_shape):
    import keras
    import tensorflow as tf

    import snas_tf  # noqa: F401  (registers the package's Keras objects)

    model = keras.saving.load_model(path)

    @tf.function(
        input_signature=[tf.TensorSpec((1, *image_shape), tf.float32)],
        autograph=False,
    )
    def forward(images):
        return model(images, training=False)

    return lambda images: forward(tf.constant(images)).numpy()


def _runner(name, path, threads, image_shape):
    if name == "keras":
        return _keras_runner(path, image_shape)
    if name == "onnx":
        from snas_tf.export.onnx import onnx_runner

        return onnx_runner(path, num_threads=threads)
    from snas_tf.export.tflite import tflite_runner

    return tflite_runner(path, num_threads=threads)


def _measure(setting, name, args):
    """Loads one format and times batch-1 runs."""
    import numpy as np

    harness.import_tensorflow(args.threads, 1)
    side = harness.sizes(SETTINGS[setting], args)["image_size"]
    path = os.path.join(args.workdir, FILES[name])
    image = np.random.default_rng(1).normal(size=(1, side, side, 3))
    image = image.astype("float32")
    start = time.perf_counter()
    run = _runner(name, path, args.threads, (side, side, 3))
    load = time.perf_counter() - start
    start = time.perf_counter()
    logits = run(image)
    first = time.perf_counter() - start
    for _ in range(args.warmup):
        run(image)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        run(image)
        times.append(time.perf_counter() - start)
    times = np.asarray(times) * 1e3
    return {
        "format": name,
        "latency_ms_median": round(float(np.median(times)), 3),
        "latency_ms_p90": round(float(np.percentile(times, 90)), 3),
        "latency_ms_min": round(float(times.min()), 3),
        "load_seconds": round(load, 2),
        "first_run_seconds": round(first, 3),
        "bytes": os.path.getsize(path),
        "output_shape": list(np.shape(logits)),
        "runs": args.steps,
        "warmup_runs": args.warmup,
        "threads": args.threads,
    }


def _child(args):
    setting, _, name = args.child.partition(":")
    if name:
        return _measure(setting, name, args)
    return _prepare(setting, args)


def _setting_rows(setting, argv, args):
    """Prepares a setting's files, then times each format; one row each."""
    with tempfile.TemporaryDirectory(prefix="snas-bench-export-") as tmp:
        child_argv = [*argv, "--workdir", tmp]
        prep = harness.run_child(__file__, child_argv, setting)
        if "error" in prep:
            return [{"setting": setting, "format": "prepare", **prep}]
        convert = prep.pop("convert_seconds")
        for key in ("peak_rss_gb", "process_seconds"):
            prep[f"prepare_{key}"] = prep.pop(key)
        rows = []
        for name in args.formats:
            row = harness.run_child(__file__, child_argv, f"{setting}:{name}")
            row = {**prep, "format": name, **row}
            row["convert_seconds"] = convert[name]
            if "latency_ms_median" in row:
                rate = harness.throughput(
                    prep["multiply_adds_per_image"],
                    1,
                    row["latency_ms_median"] / 1e3,
                    passes=1,
                )
                rate["approx_gflop_per_run"] = rate.pop("approx_gflop_per_step")
                row.update(rate)
            row["quick"] = args.quick
            rows.append(row)
        return rows


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.add_common_flags(
        parser,
        SETTINGS,
        steps=50,
        warmup=5,
        steps_flags=("--runs", "--steps"),
        batch=False,
    )
    parser.add_argument(
        "--formats", nargs="+", default=list(FORMATS), choices=FORMATS
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = harness.apply_quick(parser.parse_args(argv))
    if args.quick:
        args.calibration_images = min(
            args.calibration_images, _QUICK_CALIBRATION
        )
    if args.child:
        harness.emit_child(_child(args))
        return
    results = []
    for setting in args.settings:
        results.extend(_setting_rows(setting, argv, args))
    harness.emit("export_latency", results)


if __name__ == "__main__":
    main()
