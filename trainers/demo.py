"""The main job end to end on the bundled digits: `run_demo(model_dir)`.

search -> genotype -> retrain -> export (SavedModel, TFLite int8, ONNX) ->
summary (the search and the retraining write their plots), with CPU-sized
configs (`configs/digits_search.yaml`, `configs/digits_retrain.yaml`:
minutes on 2 cores). Writes `search/`,
`retrain/`, `export/` and `summary.md` into `model_dir`. Run again with the
same `model_dir`, each stage resumes or re-derives its outputs; the export
gets a new TF Serving version.
"""

import os

from snas_tf import dir_lock
from snas_tf.atomic_files import write_atomic
from snas_tf.config import RetrainConfig, load_config

DEMO_FORMATS = ("saved_model", "serving", "tflite_int8", "onnx")


def run_demo(
    model_dir,
    search_configs=("configs/digits_search.yaml",),
    retrain_configs=("configs/digits_retrain.yaml",),
    progress=print,
) -> dict:
    """Runs search, retrain, export and plots; returns the summary.

    Args:
        model_dir: output directory.
        search_configs: YAML files of the search.
        retrain_configs: YAML files of the retraining (its genotype is the
            search's).
        progress: called with one line per stage (None: silent).

    Returns:
        A dict: genotype, supernet / child / retrained accuracy, parameters,
        multiply-adds, the export rows and the output paths; also written to
        `model_dir/summary.md`.

    Raises:
        ValueError: for a bad config, or a `model_dir` written by another
            live process (`snas_tf.dir_lock`; each stage also locks its
            own sub-directory).
    """
    with dir_lock.hold(model_dir, "model_dir"):
        return _demo(model_dir, search_configs, retrain_configs, progress)


def _demo(model_dir, search_configs, retrain_configs, progress) -> dict:
    from snas_tf.export.exporter import export_model, load_source
    from snas_tf.trainers.retrain import run_retrain
    from snas_tf.trainers.search import run_search

    say = progress or (lambda *_: None)
    # Both configs are checked before the first stage runs.
    search_config = load_config(search_configs)
    retrain_config = load_config(retrain_configs, config_class=RetrainConfig)
    dirs = {k: os.path.join(model_dir, k) for k in ("search", "retrain")}
    dirs["export"] = os.path.join(model_dir, "export")

    say("== 1/3 search ==")
    searched = run_search(search_config, dirs["search"])
    say(f"Genotype: {searched['genotype']}")
    say("== 2/3 retrain the derived child ==")
    retrained = run_retrain(
        retrain_config, searched["genotype_path"], dirs["retrain"]
    )
    say("== 3/3 export ==")
    report = export_model(
        load_source(dirs["retrain"]),
        dirs["export"],
        DEMO_FORMATS,
        latency_runs=10,
        progress=say,
    )
    plots = sorted(
        os.path.join(dirs[job], "plots", name)
        for job in ("search", "retrain")
        for name in os.listdir(os.path.join(dirs[job], "plots"))
    )
    last = searched["last_epoch"]
    summary = {
        "genotype": searched["genotype"],
        "supernet_accuracy": last.get("val_accuracy"),
        "child_accuracy": last.get("val_child_accuracy"),
        "retrained_accuracy": retrained["val_accuracy"],
        "parameters": retrained["parameters"],
        "multiply_adds": retrained["multiply_adds"],
        "artifacts": report["artifacts"],
        "plots": plots,
        "dirs": dirs,
    }
    text = summary_markdown(summary)
    write_atomic(os.path.join(model_dir, "summary.md"), text)
    say(text)
    return summary


def _percent(value):
    return "n/a" if value is None else f"{100 * value:.1f}%"


def summary_markdown(summary) -> str:
    """The demo's summary as Markdown (also what `make demo` prints)."""
    lines = [
        "# SNAS demo on digits",
        "",
        f"- Genotype: `{summary['genotype']}`",
        "- Search, last epoch, validation: supernet "
        f"{_percent(summary['supernet_accuracy'])}, derived child without "
        f"retraining {_percent(summary['child_accuracy'])}",
        f"- Retrained child: {_percent(summary['retrained_accuracy'])} "
        f"validation accuracy, {summary['parameters']:,} parameters, "
        f"{summary['multiply_adds'] / 1e6:.2f}M multiply-adds per image",
        "",
        "| format | bytes | max abs diff | top-1 agreement | latency ms |",
        "|---|---|---|---|---|",
    ]
    for row in summary["artifacts"]:
        lines.append(
            f"| {row['format']} | {row['bytes']:,} | "
            f"{row['max_abs_diff']:.1e} | {row['top1_agreement']:.3f} | "
            f"{row['latency_ms_median']:.2f} |"
        )
    lines += ["", "Outputs:"]
    lines += [f"- {k}: {v}" for k, v in summary["dirs"].items()]
    lines.append(f"- plots: {len(summary['plots'])} PNGs under */plots/")
    return "\n".join(lines) + "\n"
