"""Benchmark: SNAS supernet search step on this machine. Prints JSON.

For each setting, in a fresh subprocess (so peak RSS is its own): seconds
per `fit` train step (median of N after warm-up), the first step (trace +
graph optimisation + first run), the process's peak RSS, and the achieved
GFLOP/s (3 x 2 x forward multiply-adds of the softened supernet x batch /
step) against the CPU's peak (`harness.PEAK_GFLOPS`).

Settings (32x32x3 inputs, 10 classes, reparametrization penalty on):
    paper: 8 cells, 16 channels, batch 64 (SNAS §3 search setting)
    small: 5 cells, 8 channels, batch 32

Usage:
    python benchmarks/search_step.py [--settings paper small] [--steps 5]
        [--warmup 2] [--intra 1] [--inter 2] [--xla]
        [--quick] [--cells N] [--channels C] [--batch B] [--image-size S]
        [--drop-path-prob P]
"""

import argparse
import sys

import harness

SETTINGS = {
    "paper": {"num_cells": 8, "channels": 16, "batch": 64, "image_size": 32},
    "small": {"num_cells": 5, "channels": 8, "batch": 32, "image_size": 32},
}


def add_model_flags(parser):
    """Supernet options; each one is read by `supernet_options`.

    The child process re-parses the same command line, so a flag added
    here reaches it with no passthrough code.
    """
    parser.add_argument(
        "--grappler",
        choices=("auto", "on", "off"),
        default="auto",
        help="Grappler's graph optimisation (runtime.grappler: null, true, "
        "false); auto, as a search by default: off unless a GPU is visible.",
    )
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        help="bfloat16 compute, float32 variables (search.mixed_precision).",
    )
    parser.add_argument(
        "--recompute",
        nargs="?",
        type=int,
        const=True,
        default=False,
        metavar="N",
        help="tf.recompute_grad per cell (less memory, more compute); "
        "with N, for the first N cells only (model.recompute).",
    )
    parser.add_argument(
        "--plain-kernels",
        action="store_true",
        help="build the supernet from plain Keras layers instead of "
        "snas_tf.kernels (runtime.fast_kernels: false).",
    )
    parser.add_argument(
        "--drop-path-prob",
        type=float,
        default=None,
        metavar="P",
        help="drop-path on every edge output (search.drop_path_prob); "
        "default: the mode's, 0.3.",
    )


def supernet_options(args) -> dict:
    """`SNASSupernet` keyword arguments from the model flags."""
    return {
        "recompute": args.recompute,
        "fast_kernels": not args.plain_kernels,
        "drop_path_prob": args.drop_path_prob,
    }


def _measure(setting, args):
    import numpy as np

    tf = harness.import_tensorflow(args.intra, args.inter)
    from snas_tf.config import SearchConfig
    from snas_tf.models import SNASSupernet
    from snas_tf.runtime import grappler_enabled
    from snas_tf.training import grappler as grappler_scope

    cfg = harness.sizes(SETTINGS[setting], args)
    options = supernet_options(args)
    grappler = grappler_enabled(
        {"auto": None, "on": True, "off": False}[args.grappler], search=True
    )
    if args.mixed_precision:
        import keras

        # As search.mixed_precision: bfloat16 compute, float32 variables.
        keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    model = SNASSupernet(
        num_classes=10,
        channels=cfg["channels"],
        num_cells=cfg["num_cells"],
        penalty_strength=SearchConfig.penalty_strength,
        **options,
    )
    model.compile(jit_compile=args.xla)
    rng = np.random.default_rng(0)
    side = cfg["image_size"]
    x = rng.normal(size=(cfg["batch"], side, side, 3)).astype("float32")
    y = rng.integers(0, 10, size=(cfg["batch"],)).astype("int32")
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    with grappler_scope(grappler):
        first, step = harness.time_fit(model, data, args.warmup, args.steps)
    madds = _forward_madds(model, x.shape)
    return {
        "setting": setting,
        **cfg,
        **options,
        "mixed_precision": args.mixed_precision,
        "grappler": grappler,
        "seconds_per_step": round(step, 4),
        "first_step_seconds": round(first, 2),
        "multiply_adds_per_image": madds,
        **harness.throughput(madds, cfg["batch"], step),
        "steps_measured": args.steps,
        "warmup_steps": args.warmup,
        "intra_op_threads": args.intra,
        "inter_op_threads": args.inter,
        "xla": args.xla,
        "quick": args.quick,
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
            # out[0]: 1 image, or the space-to-batch blocks of a dilated
            # convolution (TF runs it on the image split into 4 phases).
            total += int(out[0] * out[1] * out[2] * out[3] * per_out)
    return total


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # --quick: 16x16 images (the supernet has no auxiliary head), and one
    # setting: the two differ only in the sizes that --quick replaces.
    harness.add_common_flags(
        parser, SETTINGS, image_size_quick=16, quick_settings=["small"]
    )
    parser.add_argument("--intra", type=int, default=1)
    parser.add_argument("--inter", type=int, default=2)
    parser.add_argument("--xla", action="store_true")
    add_model_flags(parser.add_argument_group("model options"))
    args = harness.apply_quick(parser.parse_args(argv))
    if args.child:
        harness.emit_child(_measure(args.child, args))
        return
    results = []
    for setting in args.settings:
        result = harness.run_child(__file__, argv, setting)
        results.append({"setting": setting, **result})
    harness.emit("search_step", results)


if __name__ == "__main__":
    main()
