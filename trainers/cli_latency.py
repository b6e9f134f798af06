"""The `snas latency-table` subcommand: its arguments and its run."""

import os

from snas_tf.latency.table import FORMATS
from snas_tf.trainers.cli_args import int_at_least


def latency_parser(sub):
    p = sub.add_parser(
        "latency-table",
        help="Time every op of a target network with LiteRT: the latency "
        "table of a latency-aware search.",
        description="For the child network a retrain config describes, "
        "build every (op, channels, side, stride) of its cells and its "
        "fixed parts (stem, preprocesses, Adds, concatenations, head) as a "
        "tiny model, convert it to TFLite and time it with LiteRT (median "
        "of --runs after --warmup); write the table (JSON, microseconds) "
        "to --out. An interrupted build resumes (OUT.partial). "
        "--export-ops writes the .tflite models and a manifest for another "
        "device instead; --import reads that device's timings.",
    )
    p.add_argument(
        "--config",
        action="append",
        required=True,
        help="Retrain YAML config of the target network; repeatable.",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Retrain config override, e.g. child.channels=16.",
    )
    p.add_argument(
        "--out",
        dest="table",
        default=None,
        help="Table path (default: latency/<network>_c<C>_l<L>_<size>_"
        "<format>_t<threads>.json).",
    )
    p.add_argument(
        "--threads",
        type=int_at_least(1),
        default=1,
        help="LiteRT threads (default: 1).",
    )
    p.add_argument(
        "--runs",
        type=int_at_least(1),
        default=50,
        help="Timed runs per entry; the median is kept (default: 50).",
    )
    p.add_argument(
        "--warmup",
        type=int_at_least(0),
        default=5,
        help="Untimed runs first (default: 5).",
    )
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="What is timed: wall-clock time, or the invoking thread's CPU "
        "time (needs --threads 1; not inflated by other jobs on a shared "
        "machine, docs/method.md §4) (default: wall).",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="fp32",
        help="TFLite float32, or full int8 calibrated on random inputs.",
    )
    p.add_argument(
        "--primitives",
        nargs="+",
        default=None,
        metavar="OP",
        help="The search space's ops (default: all eight; must match the "
        "search's model.primitives).",
    )
    p.add_argument(
        "--num-nodes",
        type=int_at_least(1),
        default=4,
        help="Intermediate nodes per cell (default: 4; model.num_nodes).",
    )
    jobs = p.add_mutually_exclusive_group()
    jobs.add_argument(
        "--export-ops",
        metavar="DIR",
        default=None,
        help="Write the .tflite op models and manifest.json into DIR; no "
        "timing.",
    )
    jobs.add_argument(
        "--import",
        dest="import_file",
        metavar="FILE",
        default=None,
        help="Build the table from timings made elsewhere: CSV with the "
        'header id,latency_us, or JSON {"latency_us": {id: value}}.',
    )
    p.add_argument(
        "--device",
        default=None,
        help="With --import: the device's name, kept in the table.",
    )
    return p


def _target(args):
    from snas_tf.config import RetrainConfig, load_config
    from snas_tf.latency.target import target_from_retrain_config
    from snas_tf.search_space import PRIMITIVES

    config = load_config(args.config, args.override, RetrainConfig)
    return target_from_retrain_config(
        config, tuple(args.primitives or PRIMITIVES), args.num_nodes
    )


def default_out(target, fmt, threads) -> str:
    """latency/<network>_c<C>_l<L>_<size>_<format>_t<threads>.json"""
    return os.path.join(
        "latency",
        f"{target.network}_c{target.channels}_l{target.num_layers}_"
        f"{target.image_size}_{fmt}_t{threads}.json",
    )


def run_latency(args):
    from snas_tf.config_checks import path_problem

    target = _target(args)
    out = args.table or default_out(target, args.format, args.threads)
    problem = path_problem(out, directory=False)
    if problem:
        raise ValueError(f"--out {problem}.")
    if args.import_file is not None:
        from snas_tf.trainers.latency_table import import_table

        table = import_table(
            target,
            args.import_file,
            out,
            args.threads,
            args.format,
            args.device,
        )
        print(f"{len(table.entries)} entries imported into {out}")
        return
    if args.export_ops is not None:
        problem = path_problem(args.export_ops, directory=True)
        if problem:
            raise ValueError(f"--export-ops {problem}.")
        from snas_tf.trainers.latency_table import export_ops

        manifest = export_ops(target, args.export_ops, args.format)
        print(f"Op models and manifest written to {manifest}")
        return
    from snas_tf.trainers.latency_table import build_table

    table = build_table(
        target,
        out,
        args.threads,
        args.runs,
        args.warmup,
        args.format,
        clock=args.clock,
    )
    total = sum(e["latency_us"] for e in table.entries.values())
    print(
        f"{len(table.entries)} entries timed ({table.runtime['name']} "
        f"{table.runtime['version']}, {args.threads} thread(s), "
        f"{args.format}; sum {total / 1e3:.2f} ms); table written to {out}"
    )
