"""`snas export`: every deployable file of a child network, verified.

`export_model` builds each requested artifact in a hidden staging directory
under `OUT`, runs it on a fixed batch and compares it with the Keras model,
and only when **every** artifact meets its tolerance moves them into `OUT`
(file renames; TF Serving versions are new directories, never overwritten),
then writes `report.json` and `report.md`. If one misses, nothing is
published and `ExportError` names it. Each artifact is written by its
format's own function (`export_saved_model`, `export_tflite`, ...), and the
TF Serving version by `serving.write_serving_layout`; the publish is
`common.publish_journaled`.

Tolerances: the float paths (SavedModel, TFLite float32, ONNX) must match
the Keras logits to `FLOAT_TOLERANCE` absolute; the reduced-precision paths
are judged by top-1 agreement with the Keras model on a held-out batch
(`MIN_AGREEMENT`, stated in the report).
"""

import dataclasses
import json
import os
import time

import keras
import numpy as np

from snas_tf import dir_lock
from snas_tf.atomic_files import write_atomic
from snas_tf.config import RetrainConfig, load_config
from snas_tf.export import common, serving
from snas_tf.export.limits import ServingLimits
from snas_tf.export.serving import check_model_name
from snas_tf.export.table_latency import (
    check_latency_table,
    latency_table_md,
    table_latency,
)

FLOAT_TOLERANCE = 1e-4
FORMATS = (
    "saved_model",
    "serving",
    "tflite_fp32",
    "tflite_fp16",
    "tflite_dynamic",
    "tflite_int8",
    "qat_int8",
    "onnx",
)
# Top-1 agreement with the Keras model that a reduced-precision artifact
# must reach on the held-out batch.
MIN_AGREEMENT = {
    "tflite_fp16": 0.95,
    "tflite_dynamic": 0.9,
    "tflite_int8": 0.8,
    "qat_int8": 0.8,
}
FIXED_BATCH = 8
HELD_OUT_BATCH = 32
# Default number of classes of a fresh (untrained) network.
_CLASSES = {"cifar": 10, "imagenet": 1000}


class ExportError(RuntimeError):
    """An artifact missed its tolerance; nothing was published."""


@dataclasses.dataclass(frozen=True)
class ExportSource:
    """What gets exported.

    Attributes:
        model: the Keras 3 inference model (logits output).
        genotype: its `Genotype`.
        config: the `RetrainConfig` it was (or would be) trained with.
        trained: whether the weights come from a retraining.
    """

    model: object
    genotype: object
    config: RetrainConfig
    trained: bool


def load_source(
    model_dir=None, genotype=None, config_paths=(), overrides=()
) -> ExportSource:
    """The model of a retraining's `model_dir`, or a fresh one.

    Args:
        model_dir: a `snas retrain` output directory (its config.yaml,
            genotype.json and model.keras are read).
        genotype: without `model_dir`, the genotype to build with freshly
            initialised weights; with it, a check that it is the one
            trained.
        config_paths: without `model_dir`, YAML files of a `RetrainConfig`.
        overrides: `key=value` overrides of that config.

    Raises:
        ValueError: for a missing or incomplete model_dir, a genotype that
            does not match it, a corrupt model file, or neither argument.
    """
    from snas_tf.genotype import get_genotype
    from snas_tf.models import build_child_network

    if model_dir is None:
        if genotype is None:
            raise ValueError("Give --model-dir (a retraining) or --genotype.")
        config = load_config(config_paths, overrides, RetrainConfig)
        genotype = get_genotype(genotype)
        classes = _CLASSES.get(config.child.network, 10)
        model = build_child_network(
            genotype, auxiliary=False, **config.child_kwargs(classes)
        )
        return ExportSource(model, genotype, config, trained=False)
    model_dir = str(model_dir)
    if not os.path.isdir(model_dir):
        raise ValueError(f"model_dir {model_dir!r} does not exist.")
    for name in ("config.yaml", "genotype.json", "model.keras"):
        if not os.path.isfile(os.path.join(model_dir, name)):
            raise ValueError(
                f"model_dir {model_dir!r} has no {name}: not a finished "
                "`snas retrain` output."
            )
    config = load_config(
        [os.path.join(model_dir, "config.yaml")], overrides, RetrainConfig
    )
    trained = get_genotype(os.path.join(model_dir, "genotype.json"))
    if genotype is not None and get_genotype(genotype) != trained:
        raise ValueError(
            f"Genotype {get_genotype(genotype).to_string()!r} does not match "
            f"the checkpoint's {trained.to_string()!r} in {model_dir!r}."
        )
    path = os.path.join(model_dir, "model.keras")
    try:
        model = keras.saving.load_model(path)
    except Exception as e:  # zip, h5 and deserialisation errors
        raise ValueError(
            f"Cannot load {path!r} (corrupt checkpoint?): {e}"
        ) from e
    return ExportSource(model, trained, config, trained=True)


def _batches(source, seed=0):
    """(fixed batch, held-out batch, QAT labels or None, data description).

    Drawn from the evaluation pipeline when the data set is at hand;
    otherwise seeded synthetic images (and the report says so).
    """
    from snas_tf import data

    cfg = source.config.data
    n = FIXED_BATCH + HELD_OUT_BATCH
    if data.is_available(cfg):
        pipes = data.make_pipelines(cfg, n, seed, carve=True)
        images, labels = next(iter(pipes.validation.unbatch().batch(n)))
        images, labels = np.asarray(images), np.asarray(labels)
        if len(images) >= FIXED_BATCH + 2:
            return (
                images[:FIXED_BATCH],
                images[FIXED_BATCH:],
                labels,
                images,
                f"{cfg.dataset} (evaluation pipeline)",
            )
    side = source.model.inputs[0].shape[1]
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, side, side, 3)).astype("float32")
    return (
        images[:FIXED_BATCH],
        images[FIXED_BATCH:],
        None,
        images,
        "synthetic N(0, 1) images (data set not available here)",
    )


def _latency_ms(runner, image, runs):
    runner(image)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner(image)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def _build(
    name, source, stage, calibration, labels, threads, qat_options, limits
):
    """Writes one artifact into `stage` and returns its `Artifact`."""
    model = source.model
    if name == "saved_model":
        from snas_tf.export import savedmodel

        path = os.path.join(stage, "saved_model")
        savedmodel.export_saved_model(model, path, source.config.data, limits)
        return common.Artifact(name, path, savedmodel.saved_model_runner(path))
    if name.startswith("tflite_"):
        from snas_tf.export import tflite

        mode = name.removeprefix("tflite_")
        path = os.path.join(stage, f"model_{mode}.tflite")
        return tflite.export_tflite(
            model, path, mode, calibration, num_threads=threads
        )
    if name == "qat_int8":
        from snas_tf.export import qat, tflite

        path = os.path.join(stage, "model_qat_int8.tflite")
        if labels is None:
            # No labelled data: fine-tune towards the float model's classes.
            labels = np.argmax(model.predict(calibration, verbose=0), -1)
        info = qat.quantization_aware_int8(
            model,
            source.genotype,
            source.config.child_kwargs(model.outputs[0].shape[-1]),
            calibration,
            labels,
            path,
            epochs=qat_options["epochs"],
            prune=qat_options["prune"],
        )
        return common.Artifact(
            name,
            path,
            tflite.tflite_runner(path, num_threads=threads),
            quantized=True,
            notes={"qat": info},
        )
    if name == "onnx":
        from snas_tf.export import onnx

        path = os.path.join(stage, "model.onnx")
        info = onnx.export_onnx(model, path)
        return common.Artifact(
            name,
            path,
            onnx.onnx_runner(path, num_threads=threads),
            notes={"opset": info.get("opset")},
        )
    raise AssertionError(name)  # FORMATS is checked before


def check_formats(formats) -> tuple:
    """The requested formats in canonical order; `serving` needs (and
    brings) `saved_model`.

    Raises:
        ValueError: for an unknown format name (naming the valid ones).
    """
    formats = tuple(formats or FORMATS)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(
            f"Unknown export format {unknown[0]!r}. Valid formats: {FORMATS}."
        )
    if "serving" in formats and "saved_model" not in formats:
        formats += ("saved_model",)
    return tuple(f for f in FORMATS if f in formats)


def _evaluate(artifact, fixed, held, expected_fixed, expected_held, runs):
    got = np.asarray(artifact.runner(fixed), "float32")
    diff = float(np.max(np.abs(got - expected_fixed)))
    held_pred = np.argmax(np.asarray(artifact.runner(held)), -1)
    agreement = float(np.mean(held_pred == np.argmax(expected_held, -1)))
    latency = _latency_ms(artifact.runner, fixed[:1], runs)
    if artifact.quantized:
        threshold = MIN_AGREEMENT[artifact.name]
        passed = agreement >= threshold
        criterion = f"top-1 agreement >= {threshold}"
    else:
        passed = diff <= FLOAT_TOLERANCE
        criterion = f"max |diff| <= {FLOAT_TOLERANCE}"
    return {
        "format": artifact.name,
        "bytes": common.size_bytes(artifact.path),
        "max_abs_diff": diff,
        "top1_agreement": agreement,
        "latency_ms_median": latency,
        "criterion": criterion,
        "passed": bool(passed),
        **artifact.notes,
    }


def _report_md(report):
    lines = [
        f"# Export report: {report['model_name']}",
        "",
        f"- genotype: `{report['genotype']}`",
        f"- weights: {'retrained' if report['trained'] else 'fresh'}",
        f"- input: {report['input_shape']}, data: {report['data']}",
        f"- latency: median of {report['latency_runs']} runs, batch 1, "
        f"{report['threads']} thread(s)",
        "- serving_bytes limits per request: "
        + ", ".join(f"{k} {v}" for k, v in report["serving_limits"].items()),
    ]
    if "latency_table" in report:
        lines.append(latency_table_md(report["latency_table"]))
    lines += [
        "",
        "| format | path | bytes | max abs diff | top-1 agreement | "
        "latency ms | criterion | passed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["artifacts"]:
        lines.append(
            f"| {r['format']} | {r['path']} | {r['bytes']} | "
            f"{r['max_abs_diff']:.2e} | {r['top1_agreement']:.3f} | "
            f"{r['latency_ms_median']:.2f} | {r['criterion']} | "
            f"{'yes' if r['passed'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


@dir_lock.holding("out")
def export_model(
    source: ExportSource,
    out,
    formats=None,
    model_name="snas",
    threads=1,
    latency_runs=20,
    qat_epochs=1,
    prune=False,
    progress=print,
    limits: ServingLimits | None = None,
    latency_table=None,
) -> dict:
    """Exports, verifies and publishes the requested formats.

    Args:
        source: from `load_source`.
        out: output directory.
        formats: subset of `FORMATS` (default: all).
        model_name: TF Serving model name.
        threads: interpreter threads for the latency measurement.
        latency_runs: runs of the batch-1 latency median.
        qat_epochs: quantization-aware fine-tuning epochs.
        prune: magnitude-prune the convolutions (50% sparsity) before the
            quantization-aware fine-tuning of `qat_int8`.
        progress: called with one line per step (None: silent).
        limits: the per-request `ServingLimits` of the SavedModel's
            `serving_bytes` signature (None: the defaults); written into
            the report as `serving_limits`.
        latency_table: optional `LatencyTable` of the exported network
            (`snas latency-table`): the report's `latency_table` then holds
            its predicted latency next to the TFLite file of the table's
            format timed as the table was timed (`table_latency`).

    Returns:
        The report (also written to `out/report.json` and `report.md`).

    Raises:
        ValueError: for an unknown format, an invalid model name, or a
            latency table of another network or whose format is not
            exported (before anything is written), or an `out` written by
            another live process (`snas_tf.dir_lock`; nothing is touched).
        ExportError: if an artifact misses its tolerance (nothing is
            published).
    """
    formats = check_formats(formats)
    check_model_name(model_name)
    latency_target = None
    if latency_table is not None:
        latency_target = check_latency_table(latency_table, source, formats)
    out = os.fspath(out)
    limits = limits or ServingLimits()
    say = progress or (lambda *_: None)
    if common.finish_publish(out):
        say(f"Finished the publish of an interrupted export into {out}.")
    model = source.model
    fixed, held, labels, calibration, data_desc = _batches(source)
    expected_fixed = np.asarray(model.predict(fixed, verbose=0), "float32")
    expected_held = np.asarray(model.predict(held, verbose=0), "float32")
    stage = common.staging_dir(out)
    try:
        artifacts, rows = [], []
        for name in formats:
            if name == "serving":
                continue  # the SavedModel, laid out for TF Serving below
            say(f"[{len(rows) + 1}] {name}: converting and verifying")
            artifact = _build(
                name,
                source,
                stage,
                calibration,
                labels,
                threads,
                {"epochs": qat_epochs, "prune": prune},
                limits,
            )
            row = _evaluate(
                artifact,
                fixed,
                held,
                expected_fixed,
                expected_held,
                latency_runs,
            )
            row["path"] = os.path.relpath(
                artifact.path, stage
            )  # final, relative to OUT
            say(
                f"    max|diff| {row['max_abs_diff']:.2e}, top-1 agreement "
                f"{row['top1_agreement']:.3f}, "
                f"{row['latency_ms_median']:.2f} ms"
            )
            artifacts.append(artifact)
            rows.append(row)
        failed = [r for r in rows if not r["passed"]]
        if failed:
            raise ExportError(
                "Not published: "
                + "; ".join(
                    f"{r['format']} misses {r['criterion']} (max |diff| "
                    f"{r['max_abs_diff']:.2e}, top-1 agreement "
                    f"{r['top1_agreement']:.3f})"
                    for r in failed
                )
            )
        # Everything verified: stage the reports and the TF Serving version
        # too, then publish them all by renames under a journal.
        report = {
            "model_name": model_name,
            "genotype": source.genotype.to_string(),
            "trained": source.trained,
            "input_shape": list(model.inputs[0].shape[1:]),
            "data": data_desc,
            "threads": threads,
            "latency_runs": latency_runs,
            "float_tolerance": FLOAT_TOLERANCE,
            "min_agreement": MIN_AGREEMENT,
            "serving_limits": limits.as_dict(),
            "artifacts": rows,
        }
        if latency_table is not None:
            say("Timing the TFLite file as the latency table was timed")
            report["latency_table"] = table_latency(
                latency_table, latency_target, source.genotype, artifacts
            )
        moves = [os.path.relpath(a.path, stage) for a in artifacts]
        version = None
        if "serving" in formats:
            # Staged under the version it will have in OUT/serving.
            version = serving.write_serving_layout(
                os.path.join(stage, "saved_model"),
                os.path.join(stage, "serving"),
                model_name,
                version=serving.next_version(
                    os.path.join(out, "serving", model_name)
                ),
            )
            version = os.path.relpath(version, stage)
            report["serving_version_dir"] = version
            moves.append(version)
        write_atomic(
            os.path.join(stage, "report.json"),
            json.dumps(report, indent=2) + "\n",
        )
        write_atomic(os.path.join(stage, "report.md"), _report_md(report))
        moves += ["report.json", "report.md"]  # last: they mark completion
        common.publish_journaled(
            out, stage, moves, models_config="serving" if version else None
        )
        if version is not None:
            say(f"TF Serving version: {os.path.join(out, version)}")
    finally:
        # A publish that failed half-way keeps its stage for the journal.
        if not os.path.exists(os.path.join(out, common.JOURNAL)):
            common.remove_quietly(stage)
    return report


__all__ = [
    "FORMATS",
    "ExportError",
    "ExportSource",
    "ServingLimits",
    "check_formats",
    "check_latency_table",
    "check_model_name",
    "export_model",
    "load_source",
]
