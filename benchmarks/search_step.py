"""Benchmark: SNAS supernet search step on this machine. Prints JSON.

For each setting, in a fresh subprocess (so peak RSS is its own): seconds
per `fit` train step (median of N after warm-up), the first step (trace +
graph optimisation + first run) and the process's peak RSS.

Settings (32x32x3 inputs, 10 classes, reparametrization penalty on):
    paper: 8 cells, 16 channels, batch 64 (SNAS §3 search setting)
    small: 5 cells, 8 channels, batch 32

Usage:
    python benchmarks/search_step.py [--settings paper small] [--steps 5]
        [--intra 1] [--inter 2] [--xla]
"""

import argparse
import json
import subprocess
import sys

SETTINGS = {
    "paper": {"num_cells": 8, "channels": 16, "batch": 64},
    "small": {"num_cells": 5, "channels": 8, "batch": 32},
}


def _measure(setting, steps, intra, inter, xla):
    import os
    import resource
    import time

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # As `import snas_tf` does, before TensorFlow is imported.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    import tensorflow as tf

    # Must be set before any op runs (STACK-NOTES: 1/2 was fastest here).
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    import keras
    import numpy as np

    from snas_tf.models import SNASSupernet

    cfg = SETTINGS[setting]
    model = SNASSupernet(
        num_classes=10,
        channels=cfg["channels"],
        num_cells=cfg["num_cells"],
        penalty_strength=1.5e-3,
    )
    model.compile(jit_compile=xla)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(cfg["batch"], 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=(cfg["batch"],)).astype("int32")
    data = tf.data.Dataset.from_tensors((x, y)).repeat()

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_begin(self, batch, logs=None):
            self._t = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter() - self._t)

    timer = Timer()
    start = time.perf_counter()
    warmup = 2
    model.fit(
        data,
        steps_per_epoch=1 + warmup + steps,
        epochs=1,
        verbose=0,
        callbacks=[timer],
    )
    total = time.perf_counter() - start
    # The first batch timing misses model build; charge it from fit start.
    first = total - sum(timer.times[1:])
    step = float(np.median(timer.times[1 + warmup :]))
    gflop = 2 * 3 * _forward_madds(model, x.shape) * cfg["batch"] / 1e9
    return {
        "setting": setting,
        **cfg,
        "image_size": 32,
        "seconds_per_step": round(step, 4),
        "first_step_seconds": round(first, 2),
        "peak_rss_gb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3
        ),
        "approx_gflop_per_step": round(gflop, 1),
        "gflops_per_second": round(gflop / step, 1),
        "steps_measured": steps,
        "intra_op_threads": intra,
        "inter_op_threads": inter,
        "xla": xla,
    }


def _forward_madds(model, shape):
    """Multiply-adds of one image's forward pass over convs and dense."""
    import keras

    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Dense):
            total += int(layer.kernel.shape[0] * layer.kernel.shape[1])
    # Convolutions: read the output sizes from a traced forward pass.
    import tensorflow as tf

    @tf.function
    def forward(x):
        return model(x, training=False, arch_mode="darts")

    graph = forward.get_concrete_function(
        tf.TensorSpec((1,) + tuple(shape[1:]))
    ).graph
    for op in graph.get_operations():
        if op.type in ("Conv2D", "DepthwiseConv2dNative"):
            out = op.outputs[0].shape
            kernel = op.inputs[1].shape
            per_out = kernel[0] * kernel[1] * kernel[2]
            if op.type == "DepthwiseConv2dNative":
                per_out = kernel[0] * kernel[1]
            total += int(out[1] * out[2] * out[3] * per_out)
    return total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--intra", type=int, default=1)
    parser.add_argument("--inter", type=int, default=2)
    parser.add_argument("--xla", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = _measure(
            args.child, args.steps, args.intra, args.inter, args.xla
        )
        print(json.dumps(result))
        return
    results = []
    for setting in args.settings:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            setting,
            "--steps",
            str(args.steps),
            "--intra",
            str(args.intra),
            "--inter",
            str(args.inter),
        ] + (["--xla"] if args.xla else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            results.append(
                {"setting": setting, "error": out.stderr.strip()[-2000:]}
            )
            continue
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        json.dumps({"benchmark": "search_step", "results": results}, indent=2)
    )


if __name__ == "__main__":
    main()
