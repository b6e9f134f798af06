"""Benchmark: child-network retraining step on this machine. Prints JSON.

The step is `fit` of the `ChildTrainer` that `snas retrain` trains
(`snas_tf.trainers.retrain.build_trainer`): the training build of the
child network (auxiliary head; `DropPath` layers when the setting's
config trains with drop-path, their rate set to its final value), the
reference's loss, clipping and SGD update. Data are random tensors
repeated by tf.data, so no data set is needed.

For each setting, in a fresh subprocess (so peak RSS is its own): seconds
per step (median of N after warm-up), the first step (trace + graph
optimisation + first run), peak RSS, multiply-adds per image (inference
graph, auxiliary head left out, as the paper counts) and the achieved
GFLOP/s, 3 x 2 x multiply-adds x batch / step, against the CPU's peak.

Settings (SNAS_moderate; training hyperparameters from the config file):
    cifar:  20 cells, 36 channels, batch 96, 32x32, 10 classes
            (configs/cifar10_retrain.yaml: drop-path 0.2)
    mobile: ImageNet mobile, 14 cells, 48 channels, batch 32, 224x224,
            1000 classes (configs/imagenet_mobile.yaml: no drop-path)

Usage:
    python benchmarks/retrain_step.py [--settings cifar mobile] [--steps 5]
        [--warmup 2] [--intra 1] [--inter 2] [--xla] [--mixed-precision]
        [--drop-path P] [--quick] [--cells N] [--channels C] [--batch B]
        [--image-size S]
"""

import argparse
import sys

import harness

SETTINGS = harness.CHILD_SETTINGS
# Any value: it only shapes the learning-rate schedule.
_STEPS_PER_EPOCH = 1000


def _config(setting, args):
    """The `RetrainConfig` of a setting, with the command line's sizes."""
    from snas_tf.config import RetrainConfig, load_config

    s = harness.sizes(SETTINGS[setting], args)
    overrides = [
        f"child.genotype={s['genotype']}",
        f"child.network={s['network']}",
        f"child.num_layers={s['num_cells']}",
        f"child.channels={s['channels']}",
        f"data.image_size={s['image_size']}",
        f"train.batch_size={s['batch']}",
        f"train.mixed_precision={args.mixed_precision}",
        # One process, one device: the step itself, no replicas.
        "runtime.strategy=default",
        f"runtime.jit_compile={args.xla}",
    ]
    if args.drop_path is not None:
        overrides.append(f"train.drop_path_prob={args.drop_path}")
    path = harness.REPO / s["config"]
    return s, load_config([path], overrides, RetrainConfig)


def _measure(setting, args):
    import numpy as np

    tf = harness.import_tensorflow(args.intra, args.inter)
    import keras

    from snas_tf.layers.drop_path import DropPath
    from snas_tf.models import multiply_adds
    from snas_tf.trainers.retrain import build_trainer

    s, config = _config(setting, args)
    keras.utils.set_random_seed(0)
    trainer = build_trainer(
        config, s["genotype"], s["num_classes"], _STEPS_PER_EPOCH
    )
    drop_path = config.train.drop_path_prob
    drop_layers = [
        layer for layer in trainer.network.layers if isinstance(layer, DropPath)
    ]
    # DropPathScheduler would start the ramp at 0; the work is the same at
    # any rate, but draw real masks.
    for layer in drop_layers:
        layer.rate.assign(drop_path)
    rng = np.random.default_rng(0)
    side, batch = s["image_size"], s["batch"]
    x = rng.normal(size=(batch, side, side, 3)).astype("float32")
    y = rng.integers(0, s["num_classes"], size=(batch,)).astype("int32")
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    first, step = harness.time_fit(trainer, data, args.warmup, args.steps)
    madds = multiply_adds(trainer.network)
    conv = next(
        layer
        for layer in trainer.network.layers
        if isinstance(layer, keras.layers.Conv2D)
    )
    return {
        "setting": setting,
        **{k: v for k, v in s.items() if k != "config"},
        "config": s["config"],
        "auxiliary": trainer.auxiliary,
        "drop_path_prob": drop_path,
        "drop_path_layers": len(drop_layers),
        "mixed_precision": args.mixed_precision,
        "compute_dtype": conv.compute_dtype,
        "seconds_per_step": round(step, 4),
        "first_step_seconds": round(first, 2),
        "multiply_adds_per_image": madds,
        **harness.throughput(madds, batch, step),
        "steps_measured": args.steps,
        "warmup_steps": args.warmup,
        "intra_op_threads": args.intra,
        "inter_op_threads": args.inter,
        "xla": args.xla,
        "quick": args.quick,
    }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    harness.add_common_flags(parser, SETTINGS)
    parser.add_argument("--intra", type=int, default=1)
    parser.add_argument("--inter", type=int, default=2)
    parser.add_argument("--xla", action="store_true")
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        help="bfloat16 compute, float32 variables (train.mixed_precision)",
    )
    parser.add_argument(
        "--drop-path",
        type=float,
        help="drop-path probability (default: the setting's config)",
    )
    args = harness.apply_quick(parser.parse_args(argv))
    if args.child:
        harness.emit_child(_measure(args.child, args))
        return
    results = []
    for setting in args.settings:
        result = harness.run_child(__file__, argv, setting)
        results.append({"setting": setting, **result})
    harness.emit("retrain_step", results)


if __name__ == "__main__":
    main()
