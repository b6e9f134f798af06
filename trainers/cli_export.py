"""The `snas export` subcommand: its arguments and its run."""

import os

from snas_tf.export.limits import ServingLimits
from snas_tf.trainers.cli_args import count, int_at_least, job_lock, pixels


def export_parser(sub):
    p = sub.add_parser(
        "export",
        help="Export a child network to SavedModel, TF Serving, TFLite, "
        "ONNX; verify each against the Keras model.",
        description="Write the requested formats into --out, each checked "
        "against the Keras model (float paths to 1e-4, quantized paths by "
        "top-1 agreement), plus report.json and report.md. If any misses "
        "its tolerance nothing is published and the exit status is 1.",
    )
    p.add_argument(
        "--model-dir",
        default=None,
        help="A `snas retrain` output directory (reads model.keras).",
    )
    p.add_argument("--out", required=True, help="Output directory.")
    p.add_argument(
        "--formats",
        nargs="+",
        default=None,
        metavar="FORMAT",
        help="Any of saved_model serving tflite_fp32 tflite_fp16 "
        "tflite_dynamic tflite_int8 qat_int8 onnx (default: all).",
    )
    p.add_argument(
        "--genotype",
        default=None,
        help="Without --model-dir: export this genotype with fresh weights "
        "(sizes from --config/--override); with it: check it matches.",
    )
    p.add_argument(
        "--config",
        action="append",
        default=[],
        help="Retrain YAML config for a fresh --genotype export.",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Config override, e.g. data.image_size=224.",
    )
    p.add_argument(
        "--name",
        default="snas",
        help="TF Serving model name: letters, digits, _ . - (default: snas).",
    )
    p.add_argument(
        "--threads",
        type=int_at_least(1),
        default=1,
        help="Threads for the latency runs.",
    )
    p.add_argument(
        "--runs",
        type=int_at_least(1),
        default=20,
        help="Latency runs (batch 1).",
    )
    p.add_argument(
        "--qat-epochs",
        type=int_at_least(1),
        default=1,
        help="QAT fine-tuning epochs.",
    )
    p.add_argument(
        "--prune",
        action="store_true",
        help="Magnitude-prune convolutions (50%% sparsity) before QAT.",
    )
    p.add_argument(
        "--latency-table",
        default=None,
        metavar="PATH",
        help="A latency table of this network (snas latency-table): the "
        "report adds its predicted latency next to the TFLite file of the "
        "table's format timed as the table was (threads, runs, warm-ups).",
    )
    limits = ServingLimits()
    p.add_argument(
        "--max-pixels",
        type=pixels,
        default=limits.max_pixels,
        help="serving_bytes refuses an image whose header declares more "
        "pixels, before decoding it: WIDTHxHEIGHT or a count (default: "
        f"{limits.max_pixels}).",
    )
    p.add_argument(
        "--max-image-bytes",
        type=count,
        default=limits.max_image_bytes,
        help="serving_bytes refuses a larger encoded image, e.g. 8e6 or "
        f"8M (default: {limits.max_image_bytes}).",
    )
    p.add_argument(
        "--max-images",
        type=int_at_least(1),
        default=limits.max_images,
        help="serving_bytes refuses a request of more images (default: "
        f"{limits.max_images}).",
    )
    return p


def run_export(args):
    with job_lock(args.out, "--out"):
        _export(args)


def _export(args):
    from snas_tf.export.exporter import (
        check_formats,
        check_model_name,
        export_model,
        load_source,
    )

    formats = check_formats(args.formats)  # these fail before any loading
    check_model_name(args.name)
    table = None
    if args.latency_table is not None:
        from snas_tf.latency.table import load_table

        table = load_table(args.latency_table)
        fmt = table.runtime.get("format")
        if f"tflite_{fmt}" not in formats:
            raise ValueError(
                f"Latency table {args.latency_table!r} is timed in {fmt!r}; "
                f"add tflite_{fmt} to --formats to measure the same file."
            )
    limits = ServingLimits(
        args.max_pixels, args.max_image_bytes, args.max_images
    )
    source = load_source(
        args.model_dir, args.genotype, args.config, args.override
    )
    report = export_model(
        source,
        args.out,
        args.formats,
        model_name=args.name,
        threads=args.threads,
        latency_runs=args.runs,
        qat_epochs=args.qat_epochs,
        prune=args.prune,
        limits=limits,
        latency_table=table,
    )
    for row in report["artifacts"]:
        print(
            f"{row['format']:15s} {row['bytes']:>12,d} B  "
            f"max|diff| {row['max_abs_diff']:.1e}  "
            f"top-1 {row['top1_agreement']:.3f}  "
            f"{row['latency_ms_median']:.2f} ms"
        )
    if "latency_table" in report:
        t = report["latency_table"]
        measured = (
            "not measured here"
            if t["measured_ms"] is None
            else f"measured {t['measured_ms']:.2f} ms ({t['error_pct']:+.1f}%)"
        )
        print(
            f"latency table: predicted {t['predicted_ms']:.2f} ms, {measured}"
        )
    print(f"Report: {os.path.join(args.out, 'report.md')}")
