"""What every benchmark script shares.

A benchmark script's parent process parses its flags, runs each measured
case as `python <script> <same flags> --child <case>` (a fresh process, so
`ru_maxrss` is that case's own peak RSS), reads the last stdout line of
the child as a JSON object and prints one JSON object:

    {"benchmark": "<name>", "results": [{...}, ...]}

A failed case is a result with `"error"` (the tail of its stderr) instead
of figures. Parents never import TensorFlow: their stdout is the JSON only.
The child re-parses the same flags, so a new flag reaches the child
without any passthrough code.
"""

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
# Issue 7: the peak of this 2-core CPU, both cores.
PEAK_GFLOPS = 190.0
# --quick: a network small enough that a case runs in seconds. The image
# size stays the setting's own where the auxiliary head needs it.
# 3 cells: the fewest with a normal cell and both reduction cells.
QUICK_SIZES = {"cells": 3, "channels": 8, "batch": 2}
QUICK_STEPS = {"steps": 2, "warmup": 1}
# The child networks that the retraining and the export benchmarks share
# (SNAS §3.2-3.3; the paper's CIFAR-10 and ImageNet mobile settings). The
# training hyperparameters (auxiliary weight, drop-path, label smoothing,
# weight decay) come from `config`, the network from the other keys.
CHILD_SETTINGS = {
    "cifar": {
        "config": "configs/cifar10_retrain.yaml",
        "genotype": "SNAS_moderate",
        "network": "cifar",
        "num_cells": 20,
        "channels": 36,
        "batch": 96,
        "image_size": 32,
        "num_classes": 10,
    },
    "mobile": {
        "config": "configs/imagenet_mobile.yaml",
        "genotype": "SNAS_moderate",
        "network": "imagenet",
        "num_cells": 14,
        "channels": 48,
        "batch": 32,
        "image_size": 224,
        "num_classes": 1000,
    },
}


def add_common_flags(
    parser,
    settings,
    steps=5,
    warmup=2,
    image_size_quick=None,
    steps_flags=("--steps",),
    quick_settings=None,
    batch=True,
):
    """Flags of every benchmark: cases, sizes, --quick, the child hook.

    Args:
        parser: the script's `ArgumentParser`.
        settings: the setting names (`--settings` choices, all by default).
        steps: default of the measured steps (or runs).
        warmup: default of the unmeasured steps (or runs) before them.
        image_size_quick: image side under --quick (None: the setting's).
        steps_flags: names of the steps flag (its dest is `steps`).
        quick_settings: the settings --quick runs when `--settings` is not
            given (None: all). Settings that differ only in their sizes
            are the same network under --quick.
        batch: whether there is a `--batch` flag.
    """
    parser.add_argument("--settings", nargs="+", choices=settings)
    parser.add_argument(
        *steps_flags,
        dest="steps",
        metavar="N",
        type=int,
        help=f"measured steps (default {steps}; --quick "
        f"{QUICK_STEPS['steps']})",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        help=f"steps before them (default {warmup}; --quick "
        f"{QUICK_STEPS['warmup']})",
    )
    quick = {k: v for k, v in QUICK_SIZES.items() if batch or k != "batch"}
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {quick} unless given, fewer steps",
    )
    group = parser.add_argument_group("size overrides (default: setting's)")
    group.add_argument("--cells", "--layers", dest="cells", type=int)
    group.add_argument("--channels", type=int)
    if batch:
        group.add_argument("--batch", type=int)
    group.add_argument("--image-size", type=int)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.set_defaults(
        _defaults={
            "settings": list(settings),
            "quick_settings": list(quick_settings or settings),
            "steps": steps,
            "warmup": warmup,
            "image_size": image_size_quick,
        }
    )


def apply_quick(args):
    """Fills in the defaults, and the --quick ones the user did not give."""
    defaults = args._defaults
    if args.settings is None:
        key = "quick_settings" if args.quick else "settings"
        args.settings = defaults[key]
    for key in ("steps", "warmup"):
        if getattr(args, key) is None:
            quick = QUICK_STEPS[key] if args.quick else defaults[key]
            setattr(args, key, quick)
    if not args.quick:
        return args
    for key, value in QUICK_SIZES.items():
        if getattr(args, key, 0) is None:
            setattr(args, key, value)
    if args.image_size is None:
        args.image_size = defaults["image_size"]
    return args


def sizes(setting: dict, args) -> dict:
    """The setting's sizes with the command line's overrides."""
    out = dict(setting)
    for key, flag in (
        ("num_cells", "cells"),
        ("channels", "channels"),
        ("batch", "batch"),
        ("image_size", "image_size"),
    ):
        if key in out and getattr(args, flag, None) is not None:
            out[key] = getattr(args, flag)
    return out


def run_child(script, argv, case, timeout=None) -> dict:
    """Runs `script` with `argv` and `--child case` in a fresh process.

    Returns:
        The child's last stdout line as a dict, with `process_seconds`; a
        failure (non-zero exit, no JSON) is `{"error": ...}`.
    """
    cmd = [sys.executable, str(script), *argv, "--child", case]
    start = time.perf_counter()
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    wall = round(time.perf_counter() - start, 1)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        return {"error": _error_tail(out.stderr, out.returncode)}
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": "no JSON on stdout: " + lines[-1][-500:]}
    result["process_seconds"] = wall
    return result


# TensorFlow's start-up log lines and warnings: noise in an error report.
_NOISE = ("I0000 ", "W0000 ", "E0000 ", "WARNING: All log messages")


def _error_tail(stderr, returncode):
    lines = [
        ln
        for ln in stderr.strip().splitlines()
        if ln.strip() and not ln.startswith(_NOISE)
    ]
    # The exception line of a traceback is the most useful; keep a tail.
    tail = "\n".join(lines[-15:])
    return f"exit {returncode}: {tail[-2000:]}"


def emit(benchmark: str, results: list) -> None:
    """Prints the one JSON object of a benchmark script."""
    print(json.dumps({"benchmark": benchmark, "results": results}, indent=2))


def emit_child(result: dict) -> None:
    """Prints a child's result as its last stdout line."""
    result["peak_rss_gb"] = peak_rss_gb()
    print(json.dumps(result))


def peak_rss_gb() -> float:
    """This process's peak RSS (Linux: `ru_maxrss` is in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)


def import_tensorflow(intra, inter):
    """Imports TensorFlow with the thread pools set before any op runs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # snas_tf's TensorFlow environment defaults, before TensorFlow starts.
    import snas_tf  # noqa: F401

    # isort: split
    import tensorflow as tf

    # docs/tensorflow-notes.md §4: intra 1 / inter 2 was fastest for these
    # graphs.
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    return tf


def time_fit(model, data, warmup, steps):
    """Runs `fit` for 1 + warmup + steps steps.

    Returns:
        (first, median): the first step in seconds, charged from the start
        of `fit` (trace + graph optimisation + first run, and fit's own
        set-up), and the median of the last `steps` steps.
    """
    import keras
    import numpy as np

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
    return first, float(np.median(timer.times[1 + warmup :]))


def throughput(madds: int, batch: int, seconds: float, passes=3) -> dict:
    """GFLOP per step, achieved GFLOP/s and % of `PEAK_GFLOPS`.

    A multiply-add is 2 FLOP; a training step is ~3 forward passes
    (forward, and backward for inputs and for weights): `passes=3`; an
    inference is one: `passes=1`.
    """
    gflop = passes * 2 * madds * batch / 1e9
    rate = gflop / seconds
    return {
        "approx_gflop_per_step": round(gflop, 3),
        "gflops_per_second": round(rate, 2),
        "percent_of_peak": round(100 * rate / PEAK_GFLOPS, 2),
    }
