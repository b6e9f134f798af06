"""Benchmark: how well a latency table predicts whole child networks.

Samples random genotypes of the table's search space (each node keeps two
edges from distinct inputs, each edge an op other than `none`, uniformly;
seeded, so a resumed run samples the same ones), and for each:

- predicts its latency from the table (`snas_tf.latency.cost`: the sum of
  its parts' timings);
- builds the child network at the target's sizes (the retrain config of
  `--config`, no auxiliary head), converts it to TFLite in the table's
  format (`export.tflite.convert_tflite`; int8 calibrated on random
  N(0, 1) images) and times it twice with LiteRT as the table was timed
  (`export.op_latency.time_op_model`: the table's threads, runs,
  warm-ups and clock, each time in a fresh interpreter). The two medians'
  disagreement is the machine's noise floor; the measurement is the lower
  of the two (other jobs on the machine only ever add time);
- counts its multiply-adds (`snas_tf.models.multiply_adds`) and the
  timed parts it runs (`part_count`).

Then it scores (`snas_tf.latency.calibration.calibration_summary`) the
table's raw sum, the sum with a fitted scale and with a fitted affine
correction, and the best single-scale multiply-add predictor
`latency ~ a * madds`; every fit is scored leave-one-out (each genotype
predicted by a fit on the others). `--int8-table` adds the same for int8.

Each genotype's result goes to the state file (`<out>.state.json`,
written atomically) as soon as it is measured; a run started again with
the same arguments resumes there. The result is one JSON file (`--out`)
and a Markdown table (`--md`), both written atomically, with the load
average before and after (the machine may be shared). `--write-calibrated`
also writes each table with the correction of the lower leave-one-out
MAPE (`a * sum`, or `a * sum + c * parts`) fitted on all its genotypes as
its `calibration` (`snas_tf.latency.table`), which every later
prediction from that table applies.

Usage:
    python benchmarks/latency_model.py --table mobile_fp32.json
        [--config configs/imagenet_mobile.yaml] [--override KEY=VALUE]
        [--int8-table mobile_int8.json] [--genotypes 30] [--seed 0]
        [--out latency_model.json] [--md latency_model.md] [--quick]
    --quick: 3 genotypes, 2 runs after 1 warm-up (give a tiny --config
    and its table for a smoke run in seconds).
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
FORMATS = ("fp32", "int8")
# Random images the int8 conversion is calibrated on.
CALIBRATION_IMAGES = 8
QUICK = {"genotypes": 3, "runs": 2, "warmup": 1}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--table", required=True, help="fp32 latency table.")
    p.add_argument("--int8-table", default=None, help="int8 latency table.")
    p.add_argument(
        "--config",
        action="append",
        default=None,
        help="retrain config of the target (default: "
        "configs/imagenet_mobile.yaml)",
    )
    p.add_argument("--override", action="append", default=[])
    p.add_argument("--genotypes", type=int, default=None, help="default 30")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--runs", type=int, default=None, help="default: the table's"
    )
    p.add_argument(
        "--warmup", type=int, default=None, help="default: the table's"
    )
    p.add_argument("--out", default="latency_model.json")
    p.add_argument("--md", default=None, help="default: --out with .md")
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--write-calibrated",
        action="store_true",
        help="also write each table with its better leave-one-out "
        "correction fitted on all genotypes as its calibration, to <out "
        "without .json>.<format>-table.json",
    )
    args = p.parse_args(argv)
    args.config = args.config or [str(REPO / "configs/imagenet_mobile.yaml")]
    for key, value in QUICK.items():
        if getattr(args, key) is None and args.quick:
            setattr(args, key, value)
    args.genotypes = args.genotypes or 30
    if args.genotypes < 3:
        p.error(f"--genotypes {args.genotypes}: expected >= 3.")
    args.md = args.md or os.path.splitext(args.out)[0] + ".md"
    return args


def sample_genotypes(space, count, seed):
    """`count` random genotypes of `space`: two edges per node from
    distinct inputs, ops other than `none`, uniformly."""
    import numpy as np

    from snas_tf.genotype import Genotype

    rng = np.random.default_rng(seed)
    ops = [op for op in space.primitives if op != "none"]

    def cell():
        nodes = []
        for j in range(space.num_nodes):
            sources = rng.choice(j + 2, size=2, replace=False)
            nodes.append(
                [(ops[rng.integers(len(ops))], int(s)) for s in sorted(sources)]
            )
        return nodes

    return [Genotype(normal=cell(), reduce=cell()) for _ in range(count)]


def _tables(args):
    """`{format: (table, target)}`, each checked against --config."""
    from snas_tf.config import RetrainConfig, load_config
    from snas_tf.latency.table import check_table, load_table
    from snas_tf.latency.target import target_from_retrain_config

    config = load_config(args.config, args.override, RetrainConfig)
    tables = {}
    for path, fmt in ((args.table, "fp32"), (args.int8_table, "int8")):
        if path is None:
            continue
        table = load_table(path)
        if table.runtime.get("format") != fmt:
            raise ValueError(
                f"Latency table {path!r} is timed in "
                f"{table.runtime.get('format')!r}; expected {fmt!r}."
            )
        target = target_from_retrain_config(
            config, table.target["primitives"], table.target["num_nodes"]
        )
        # Predictions from the raw timings: a calibration fitted before is
        # what this run measures afresh.
        check_table(table, target, "--config")
        tables[fmt] = (table.uncalibrated(), target)
    return config, tables


def _settings(args, tables):
    return {
        "tables": {
            f: {"path": os.path.abspath(t.path), "date": t.runtime.get("date")}
            for f, (t, _) in tables.items()
        },
        "config": args.config,
        "override": args.override,
        "genotypes": args.genotypes,
        "seed": args.seed,
        "runs": args.runs,
        "warmup": args.warmup,
    }


def _load_state(path, settings):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        state = json.load(f)
    if state.get("settings") != settings:
        raise ValueError(
            f"State file {path!r} is of another run ({state.get('settings')}"
            f"); expected {settings}. Remove it or give another --out."
        )
    return state["rows"]


def _measure(genotype, config, num_classes, tables, runs, warmup):
    """One genotype's row: prediction, two timings per format, madds."""
    import keras
    import numpy as np

    from snas_tf.atomic_files import write_atomic
    from snas_tf.export.op_latency import time_op_model
    from snas_tf.export.tflite import convert_tflite
    from snas_tf.latency.calibration import part_count
    from snas_tf.latency.cost import predict_latency
    from snas_tf.latency.table import table_clock
    from snas_tf.models import build_child_network, multiply_adds

    keras.utils.set_random_seed(0)
    model = build_child_network(
        genotype, auxiliary=False, **config.child_kwargs(num_classes)
    )
    row = {
        "genotype": genotype.to_string(),
        "madds": multiply_adds(model),
        "load_1min": round(os.getloadavg()[0], 2),
    }
    row["parts"] = part_count(next(iter(tables.values()))[1], genotype)
    side = config.data.image_size
    images = np.random.default_rng(0).normal(
        size=(CALIBRATION_IMAGES, side, side, 3)
    )
    for fmt, (table, target) in tables.items():
        start = time.perf_counter()
        blob = convert_tflite(model, fmt, images.astype("float32"))
        convert_s = time.perf_counter() - start
        threads = table.runtime["threads"]
        n = runs or table.runtime["runs"]
        w = warmup if warmup is not None else table.runtime["warmup"]
        with tempfile.TemporaryDirectory(prefix="snas-calib-") as tmp:
            path = os.path.join(tmp, "child.tflite")
            write_atomic(path, blob)
            clock = table_clock(table.runtime)
            timings = [
                time_op_model(path, threads, n, w, clock=clock) / 1e3
                for _ in "ab"
            ]
        predicted = predict_latency(table, target, genotype)
        row[fmt] = {
            "predicted_ms": predicted["total_us"] / 1e3,
            "stem_ms": predicted["stem_us"] / 1e3,
            "head_ms": predicted["head_us"] / 1e3,
            "timings_ms": timings,
            "measured_ms": min(timings),
            "convert_s": round(convert_s, 2),
        }
    keras.backend.clear_session()
    return row


def summarize(rows, formats) -> dict:
    """Per format: the calibration scores and the noise floor."""
    from snas_tf.latency.calibration import calibration_summary, disagreement

    out = {}
    for fmt in formats:
        flat = [
            {**r[fmt], "madds": r["madds"], "parts": r["parts"]} for r in rows
        ]
        out[fmt] = {
            **calibration_summary(flat),
            "noise": disagreement(
                [r["timings_ms"][0] for r in flat],
                [r["timings_ms"][1] for r in flat],
            ),
        }
    return out


def _write_calibrated(args, tables, result) -> dict:
    """Each table with the correction of the lower leave-one-out MAPE,
    `a * sum` or `a * sum + c * parts`, fitted on every genotype of this
    run, as its `calibration`; `{format: path}`."""
    import dataclasses

    paths = {}
    for fmt, (table, _) in tables.items():
        s = result["summary"][fmt]
        parts = (
            s["table_parts_loo"]["mape_pct"]
            < (s["table_scaled_loo"]["mape_pct"])
        )
        fit = s["parts_all"] if parts else (s["scale_all"][0], 0.0)
        chosen = "table_parts_loo" if parts else "table_scaled_loo"
        calibration = {
            "scale": fit[0],
            "per_part_us": fit[1] * 1e3,  # the fit is in ms per part
            "genotypes": result["n"],
            "seed": args.seed,
            "clock": table.runtime.get("clock", "wall"),
            "raw_mape_pct": s["table"]["mape_pct"],
            "fit": chosen,
            "loo_mape_pct": s[chosen]["mape_pct"],
            "loo_spearman": s[chosen]["spearman"],
            "load_average": result["load_before"],
            "source": "benchmarks/latency_model.py",
        }
        path = os.path.splitext(args.out)[0] + f".{fmt}-table.json"
        dataclasses.replace(table, calibration=calibration).save(path)
        paths[fmt] = path
    return paths


def markdown(result) -> str:
    """The summary and per-genotype tables."""
    lines = [
        "# Latency table vs whole networks",
        "",
        f"- {result['n']} random genotypes, seed {result['settings']['seed']}"
        f"; load average before {result['load_before']}, after "
        f"{result['load_after']} ({result['cpu_count']} cores)",
        "- 1-minute load average while measuring (min / max): "
        + (
            "{} / {}".format(
                result["load_1min_rows"][0], result["load_1min_rows"][-1]
            )
            if result["load_1min_rows"]
            else "not recorded"
        ),
        "- fits scored leave-one-out; measured = lower of two medians",
        "",
        "| format | predictor | Spearman | MAPE % |",
        "|---|---|---|---|",
    ]
    names = {
        "table": "table sum",
        "table_scaled_loo": "a * table sum (LOO)",
        "table_affine_loo": "a * table sum + b (LOO)",
        "table_parts_loo": "a * table sum + c * parts (LOO)",
        "madds_scaled_loo": "a * madds (LOO)",
    }
    for fmt, s in result["summary"].items():
        for key, name in names.items():
            lines.append(
                f"| {fmt} | {name} | {s[key]['spearman']:.3f} | "
                f"{s[key]['mape_pct']:.1f} |"
            )
        noise = s["noise"]
        lines.append(
            f"| {fmt} | noise: two medians differ (median / max) | | "
            f"{noise['median_pct']:.1f} / {noise['max_pct']:.1f} |"
        )
    lines += ["", "| # | madds | format | predicted ms | measured ms (two) |"]
    lines.append("|---|---|---|---|---|")
    for i, row in enumerate(result["rows"]):
        for fmt in result["summary"]:
            r = row[fmt]
            lines.append(
                f"| {i} | {row['madds']:,} | {fmt} | {r['predicted_ms']:.2f} | "
                + " / ".join(f"{t:.2f}" for t in r["timings_ms"])
                + " |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        config, tables = _tables(args)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    import keras

    from snas_tf.atomic_files import write_atomic

    settings = _settings(args, tables)
    state_path = os.path.splitext(args.out)[0] + ".state.json"
    try:
        rows = _load_state(state_path, settings)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    target = next(iter(tables.values()))[1]
    genotypes = sample_genotypes(target.search_space, args.genotypes, args.seed)
    from snas_tf.latency.calibration import part_count

    for row in rows:  # a state written before rows counted their parts
        row.setdefault("parts", part_count(target, row["genotype"]))
    load_before = [round(x, 2) for x in os.getloadavg()]
    bar = keras.utils.Progbar(len(genotypes))
    bar.update(len(rows))
    for genotype in genotypes[len(rows) :]:
        rows.append(
            _measure(
                genotype,
                config,
                target.num_classes,
                tables,
                args.runs,
                args.warmup,
            )
        )
        write_atomic(
            state_path,
            json.dumps({"settings": settings, "rows": rows}, indent=1),
        )
        bar.update(len(rows))
    from snas_tf.export.op_latency import runtime_info

    result = {
        "benchmark": "latency_model",
        "settings": settings,
        "runtime": runtime_info(),
        "cpu_count": os.cpu_count(),
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        # The 1-minute load average as each genotype was measured (a
        # resumed run's `load_before` is that of the resumption).
        "load_1min_rows": sorted(
            r["load_1min"] for r in rows if "load_1min" in r
        ),
        "n": len(rows),
        "summary": summarize(rows, list(tables)),
        "rows": rows,
    }
    if args.write_calibrated:
        result["calibrated_tables"] = _write_calibrated(args, tables, result)
    write_atomic(args.out, json.dumps(result, indent=1) + "\n")
    write_atomic(args.md, markdown(result))
    print(markdown(result).split("\n\n| # |")[0])
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
