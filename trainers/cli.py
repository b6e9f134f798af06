"""The `snas` command line: thin wrappers over importable `run_*` functions.

Errors in the user's input (bad config keys or values, unknown names) print
one line naming the bad value and exit with status 2; `--debug` shows the
traceback instead.
"""

import os
import sys

from snas_tf.trainers.cli_args import (
    Parser,
    check_paths,
    count,
    int_at_least,
    job_lock,
)
from snas_tf.trainers.cli_export import export_parser, run_export
from snas_tf.trainers.cli_import import import_parser, run_import
from snas_tf.trainers.cli_latency import latency_parser, run_latency


def _add_config_args(p, job):
    p.add_argument(
        "--config",
        action="append",
        default=[],
        help="YAML config file; repeat to merge several, later ones win.",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Set one config value, e.g. train.epochs=10; repeatable; "
        "applied after the files.",
    )
    p.add_argument(
        "--model-dir",
        default=None,
        help=f"Output directory (default: runs/{job}-<timestamp>).",
    )


def _search_parser(sub):
    p = sub.add_parser(
        "search",
        help="Run an SNAS architecture search.",
        description="Search a cell architecture with SNAS and write "
        "config.yaml, genotype.json, history.json, checkpoints and "
        "TensorBoard logs into --model-dir.",
    )
    _add_config_args(p, "search")
    return p


def _retrain_parser(sub):
    p = sub.add_parser(
        "retrain",
        help="Retrain the child network of a genotype from scratch.",
        description="Train the child network of a genotype (a search's "
        "genotype.json or a registry name) and write config.yaml, "
        "genotype.json, history.json, checkpoints, TensorBoard logs and "
        "model.keras (the inference network) into --model-dir. Running "
        "again with the same --model-dir resumes an interrupted run.",
    )
    _add_config_args(p, "retrain")
    p.add_argument(
        "--genotype",
        default=None,
        help="Registry name, genotype.json path, JSON or compact string "
        "(default: child.genotype of the config).",
    )
    return p


def _summary_parser(sub):
    p = sub.add_parser(
        "summary",
        help="Parameters and multiply-adds of a genotype's child network.",
        description="Build the child network of a genotype and print its "
        "trainable parameters (auxiliary head excluded, the paper's "
        "convention; also with it) and multiply-adds per image.",
    )
    p.add_argument(
        "--genotype",
        required=True,
        help="Registry name (SNAS_mild, SNAS_moderate, SNAS_aggressive, "
        "DARTS_V2), a genotype.json path, a JSON string or a compact string.",
    )
    p.add_argument(
        "--network",
        choices=("cifar", "imagenet"),
        default="cifar",
        help="Network family (default: cifar).",
    )
    p.add_argument(
        "--layers",
        type=int_at_least(1),
        help="Cells (default: 20 cifar, 14 imagenet).",
    )
    p.add_argument(
        "--channels",
        type=int_at_least(2, even=True),
        help="Initial channels, even (default: 36 cifar, 48 imagenet).",
    )
    p.add_argument(
        "--classes",
        type=int_at_least(1),
        help="Classes (default: 10 / 1000).",
    )
    p.add_argument(
        "--image-size",
        type=int_at_least(1),
        help="Image side (default: 32 / 224).",
    )
    p.add_argument(
        "--latency-table",
        default=None,
        metavar="PATH",
        help="Also predict the child's latency from this table (of "
        "`snas latency-table`); the sizes default to the table's target.",
    )
    p.add_argument("--json", action="store_true", help="Print JSON.")
    return p


def _run_summary(args):
    import json

    from snas_tf.trainers.summary import summarize

    result = summarize(
        args.genotype,
        args.network,
        args.layers,
        args.channels,
        args.classes,
        args.image_size,
        args.latency_table,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{result['network']} network, {result['layers']} cells, "
        f"{result['channels']} channels, {result['classes']} classes, "
        f"{result['image_size']}x{result['image_size']} images"
    )
    print(f"genotype: {result['genotype']}")
    print(f"parameters (no auxiliary head): {result['params'] / 1e6:.2f}M")
    if result["params_with_auxiliary"] is not None:
        print(
            "parameters (with auxiliary head): "
            f"{result['params_with_auxiliary'] / 1e6:.2f}M"
        )
    print(f"multiply-adds per image: {result['multiply_adds'] / 1e6:.0f}M")
    if "latency" in result:
        latency, runtime = result["latency"], result["latency_runtime"]
        print(
            f"predicted latency: {latency['total_us'] / 1e3:.2f} ms "
            f"({runtime.get('name')} {runtime.get('version')}, "
            f"{runtime.get('threads')} thread(s), {runtime.get('format')}, "
            f"{runtime.get('cpu')})"
        )


def _run_search(args):
    from snas_tf.config import load_config
    from snas_tf.latency.cost import search_latency_costs

    config = load_config(args.config, args.override)
    # A bad latency table: one line, exit 2, before TensorFlow starts.
    search_latency_costs(config)
    model_dir = _default_dir(args, "search")
    with job_lock(model_dir, config=config):
        from snas_tf.trainers.search import run_search  # imports TensorFlow

        summary = run_search(config, model_dir)
    last = summary["last_epoch"]
    print(f"Genotype: {summary['genotype']}")
    for key in ("val_accuracy", "val_child_accuracy"):
        if key in last:
            print(f"{key}: {last[key]:.4f}")
    print(f"Outputs written to {model_dir}")


def _default_dir(args, job):
    import time

    return args.model_dir or os.path.join(
        "runs", time.strftime(f"{job}-%Y%m%d-%H%M%S")
    )


def _run_retrain(args):
    from snas_tf.config import RetrainConfig, load_config

    config = load_config(args.config, args.override, RetrainConfig)
    model_dir = _default_dir(args, "retrain")
    with job_lock(model_dir, config=config):
        from snas_tf.trainers.retrain import run_retrain  # imports TF

        summary = run_retrain(config, args.genotype, model_dir)
    print(f"Genotype: {summary['genotype']}")
    print(
        f"Parameters (no auxiliary head): {summary['parameters'] / 1e6:.2f}M"
        f", multiply-adds: {summary['multiply_adds'] / 1e6:.1f}M"
    )
    for key in ("val_accuracy", "val_top5_accuracy"):
        if summary[key] is not None:
            print(f"{key}: {summary[key]:.4f}")
    print(f"Outputs written to {summary['model_dir']}")


def _plot_parser(sub):
    p = sub.add_parser(
        "plot",
        help="Plot a search or retraining: cells, α heatmaps, curves.",
        description="Write PNGs into <model-dir>/plots: the normal and "
        "reduction cells of genotype.json, per-epoch curves of "
        "history.json (temperature, entropies, supernet vs child "
        "accuracy, expected cost, losses) and, for a search, softmax(α) "
        "heatmaps of the last epoch and over the epochs.",
    )
    p.add_argument(
        "--model-dir",
        required=True,
        help="A `snas search` or `snas retrain` output directory (reads "
        "genotype.json and history.json).",
    )
    return p


def _run_plot(args):
    from snas_tf.trainers.plot import run_plot

    for path in run_plot(args.model_dir):
        print(path)
    print(f"Plots written to {os.path.join(args.model_dir, 'plots')}")


def _tune_parser(sub):
    p = sub.add_parser(
        "tune",
        help="Tune η and the temperature schedule for a parameter or "
        "multiply-add budget (keras-tuner).",
        description="Run one SNAS search per trial, each with its own "
        "resource-constraint strength η (search.penalty_strength) and "
        "temperature schedule, and measure the derived child at the "
        "retraining size. A trial scores its child accuracy without "
        "retraining when the child is within the budget, and ranks below "
        "every such trial when not. Writes config.yaml, tune.yaml, tuner/, "
        "trials/, trials.csv, trials.md, best_config.yaml and "
        "best_genotype.json into --model-dir; running again with the same "
        "--model-dir resumes. Exit status 1 if every trial failed or none "
        "met the budget.",
    )
    _add_config_args(p, "tune")
    p.add_argument(
        "--max-params",
        type=count,
        help="Budget of trainable parameters of the retrained child, "
        "auxiliary head excluded (e.g. 3e6 or 3M).",
    )
    p.add_argument(
        "--max-madds",
        type=count,
        help="Budget of multiply-adds per image of the retrained child "
        "(e.g. 600M). Give this and/or --max-params.",
    )
    p.add_argument(
        "--max-latency-ms",
        type=float,
        help="Budget of the retrained child's latency in ms, predicted from "
        "--latency-table; the best child is then converted to TFLite and "
        "timed to check it.",
    )
    p.add_argument(
        "--latency-table",
        default=None,
        metavar="PATH",
        help="Latency table of the --retrain-config network "
        "(snas latency-table); needed by --max-latency-ms.",
    )
    p.add_argument(
        "--max-trials",
        type=int_at_least(1),
        default=10,
        help="Trials in all, counting those already in --model-dir "
        "(default: 10).",
    )
    p.add_argument(
        "--algorithm",
        choices=("bayesian", "random"),
        default="bayesian",
        help="Oracle: Gaussian-process Bayesian optimisation or random "
        "search (default: bayesian). No hyperband: a short SNAS search is "
        "not the start of a longer one (λ anneals over all epochs).",
    )
    p.add_argument(
        "--retrain-config",
        action="append",
        default=[],
        help="Retrain YAML config giving the child's size and data set "
        "(classes, image size); repeatable (default: CIFAR-10, 20 cells, "
        "36 channels).",
    )
    p.add_argument(
        "--retrain-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Set one retrain config value, e.g. child.num_layers=8; "
        "repeatable.",
    )
    return p


def _run_tune(args):
    from snas_tf.config import RetrainConfig, load_config

    config = load_config(args.config, args.override)
    retrain = load_config(
        args.retrain_config, args.retrain_override, RetrainConfig
    )
    from snas_tf.latency.cost import tuning_latency_table

    # A bad latency table: one line, exit 2, before TensorFlow starts.
    tuning_latency_table(
        config, retrain, args.max_latency_ms, args.latency_table
    )
    model_dir = _default_dir(args, "tune")
    with job_lock(model_dir, config=config):
        from snas_tf.trainers.tune import run_tune  # imports TensorFlow

        run_tune(
            config,
            model_dir,
            max_params=args.max_params,
            max_madds=args.max_madds,
            max_trials=args.max_trials,
            algorithm=args.algorithm,
            retrain_config=retrain,
            max_latency_ms=args.max_latency_ms,
            latency_table=args.latency_table,
        )


def _demo_parser(sub):
    p = sub.add_parser(
        "demo",
        help="The whole job on the bundled digits: search, retrain, "
        "export, plots, summary.",
        description="Search on scikit-learn's bundled digits, retrain the "
        "derived child, export it (SavedModel, TF Serving, TFLite int8, "
        "ONNX; each verified), plot, and print a summary; CPU-sized "
        "configs, minutes on 2 cores. Writes search/, retrain/, export/ "
        "and summary.md into --model-dir.",
    )
    p.add_argument(
        "--config",
        action="append",
        default=None,
        help="Search YAML config; repeatable (default: "
        "configs/digits_search.yaml).",
    )
    p.add_argument(
        "--retrain-config",
        action="append",
        default=None,
        help="Retrain YAML config; repeatable (default: "
        "configs/digits_retrain.yaml).",
    )
    p.add_argument(
        "--model-dir",
        default=None,
        help="Output directory (default: runs/demo-<timestamp>); an "
        "existing one resumes.",
    )
    return p


def _run_demo(args):
    model_dir = _default_dir(args, "demo")
    with job_lock(model_dir):
        from snas_tf.trainers.demo import run_demo

        run_demo(
            model_dir,
            args.config or ["configs/digits_search.yaml"],
            args.retrain_config or ["configs/digits_retrain.yaml"],
        )
    print(f"Outputs written to {model_dir}")


# Subcommands whose --model-dir is read, not written.
def main(argv=None) -> int:
    """Runs `snas ARGV` (None: the process's own command line) and returns
    its exit status.

    Run as the process's own command (`argv` None), TensorFlow's known
    start-up lines are filtered out of stderr (`stderr_filter`) and its C++
    INFO and WARNING lines are off (an explicit TF_CPP_MIN_LOG_LEVEL
    wins); `--debug` keeps both, and shows tracebacks.
    """
    parser = Parser(
        prog="snas",
        description="SNAS: stochastic neural architecture search in Keras.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="Show full tracebacks and every TensorFlow log line.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _search_parser(sub)
    _retrain_parser(sub)
    export_parser(sub)
    _summary_parser(sub)
    _plot_parser(sub)
    _demo_parser(sub)
    _tune_parser(sub)
    import_parser(sub)
    latency_parser(sub)
    args = parser.parse_args(argv)
    if args.debug:
        return _dispatch(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if argv is not None or "tensorflow" in sys.modules:
        return _dispatch(args)
    from snas_tf.trainers.stderr_filter import filtered_stderr

    with filtered_stderr():
        return _dispatch(args)


def _dispatch(args) -> int:
    """Runs the subcommand of `args`; returns the exit status."""
    commands = {
        "search": _run_search,
        "retrain": _run_retrain,
        "export": run_export,
        "summary": _run_summary,
        "plot": _run_plot,
        "demo": _run_demo,
        "tune": _run_tune,
        "import-torch": run_import,
        "latency-table": run_latency,
    }
    try:
        check_paths(args)
        commands[args.command](args)
    except (ValueError, TypeError) as e:
        if args.debug:
            raise
        print(f"snas {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, FloatingPointError) as e:
        # A job that ran but failed: an export tolerance, a tuning with no
        # usable trial, a non-finite loss (the last checkpoint is kept).
        if args.debug:
            raise
        print(f"snas {args.command}: failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
