"""Benchmark: SNAS against DARTS and random cells on digits (Table 1's
shape). Prints JSON.

For each seed, an SNAS and a DARTS search of the same data with the same
epochs (`configs/digits_search.yaml`, `search.mode` snas / darts, each
mode's own derivation rule: edge_all / top2), then the paper's Table 1
columns per mode: supernet validation accuracy, the derived child's
accuracy without retraining, the child retrained from scratch
(`configs/digits_retrain.yaml`, the same budget for every child), the
final entropies of softmax(α) and the child's parameters. Beside them,
`--random` cells of the SNAS child's parameter count, retrained on the
same budget: the searched child should beat them. Random rule: each edge
of both cells draws its op uniformly from the search space's primitives
(`none` drops the edge, as edge_all does); a draw is kept when its child
network's parameters are within ±10% of the seed's SNAS child
(`PARAM_TOLERANCE`), else drawn again.

Writes into `--out` (default runs/consistency, ignored by git):
`state.json` (every finished unit: a search, a retraining, a sampling),
`results.json` and `table.md` (mean ± std over seeds), all atomically,
and one directory per search and retraining. Run the same command again
after a crash: finished units are skipped and an interrupted search or
retraining resumes from its own checkpoint. Progress goes to stderr, one
line per unit; stdout is the JSON only.

Usage:
    python benchmarks/consistency.py [--seeds 0 1 2] [--random 5]
        [--out runs/consistency] [--search-epochs N] [--retrain-epochs N]
        [--override KEY=VALUE ...] [--retrain-override KEY=VALUE ...]
        [--quick]
"""

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import platform
import sys
import time

import harness

from snas_tf import dir_lock
from snas_tf.atomic_files import write_atomic
from snas_tf.config import RetrainConfig, config_to_dict, load_config

SEARCH_CONFIG = harness.REPO / "configs" / "digits_search.yaml"
RETRAIN_CONFIG = harness.REPO / "configs" / "digits_retrain.yaml"
MODES = ("snas", "darts")
PARAM_TOLERANCE = 0.10
# Draws before the sampler gives up on a parameter target.
MAX_DRAWS = 2000
# --quick: one seed, one random cell, a few hundred digits, short runs.
QUICK = {
    "seeds": [0],
    "random": 1,
    "search_epochs": 2,
    "retrain_epochs": 1,
    "override": ["data.max_examples=256"],
    "retrain_override": ["data.max_examples=256"],
}
STATE_FILE = "state.json"


def configs(args, seed):
    """The search config of each mode and the retraining config, for
    `seed`, with the command line's overrides (checked: ValueError)."""
    common = [*args.override, f"runtime.seed={seed}"]
    if args.search_epochs is not None:
        common.append(f"search.epochs={args.search_epochs}")
    searches = {
        mode: load_config([SEARCH_CONFIG], [*common, f"search.mode={mode}"])
        for mode in MODES
    }
    retrain = [*args.retrain_override, f"runtime.seed={seed}"]
    if args.retrain_epochs is not None:
        retrain.append(f"train.epochs={args.retrain_epochs}")
    return searches, load_config([RETRAIN_CONFIG], retrain, RetrainConfig)


def plan(seeds, num_random) -> list:
    """The units in run order, seed by seed: (name, kind, mode, seed, k)."""
    units = []
    for seed in seeds:
        for mode in MODES:
            units.append((f"search-{mode}-s{seed}", "search", mode, seed, 0))
        for mode in MODES:
            units.append((f"retrain-{mode}-s{seed}", "retrain", mode, seed, 0))
        units.append((f"sample-s{seed}", "sample", "random", seed, 0))
        for k in range(num_random):
            name = f"retrain-random{k}-s{seed}"
            units.append((name, "retrain", "random", seed, k))
    return units


def child_parameters(genotype, retrain_config) -> int:
    """Parameters of `genotype`'s child network as the retraining builds
    it (inference graph, the paper's count)."""
    import keras

    from snas_tf.data import num_classes
    from snas_tf.models import build_child_network, count_parameters

    classes = num_classes(retrain_config.data)
    model = build_child_network(
        genotype, auxiliary=False, **retrain_config.child_kwargs(classes)
    )
    count = count_parameters(model)
    keras.utils.clear_session()
    return count


def sample_matched(
    target,
    count,
    search_space,
    parameters,
    seed,
    exclude=(),
    tolerance=PARAM_TOLERANCE,
):
    """`count` distinct random edge_all genotypes whose `parameters(g)`
    is within `tolerance` of `target` (the rule of the module docstring),
    none of them in `exclude` (genotypes).

    Returns:
        (genotypes, draws): the kept genotypes and how many were drawn.

    Raises:
        ValueError: when `MAX_DRAWS` draws keep fewer than `count`.
    """
    import numpy as np

    from snas_tf.genotype import derive_genotype

    rng = np.random.default_rng(seed)
    shape = (search_space.num_edges, search_space.num_ops)
    kept, seen = [], {g.to_string(): None for g in exclude}
    for draw in range(1, MAX_DRAWS + 1):
        # One-hot logits of uniform ops: edge_all keeps each edge's op.
        picks = [
            np.eye(search_space.num_ops)[rng.integers(0, shape[1], shape[0])]
            for _ in range(2)
        ]
        genotype = derive_genotype(*picks, "edge_all", search_space)
        key = genotype.to_string()
        if key in seen:
            continue
        seen[key] = parameters(genotype)
        if abs(seen[key] - target) <= tolerance * target:
            kept.append(genotype)
            if len(kept) == count:
                return kept, draw
    raise ValueError(
        f"{MAX_DRAWS} random genotypes kept {len(kept)} of {count} within "
        f"±{tolerance:.0%} of {target} parameters."
    )


def _search_unit(config, directory):
    from snas_tf.trainers.search import run_search

    searched = run_search(config, directory)
    last = searched["last_epoch"]
    keys = (
        "val_accuracy",
        "val_child_accuracy",
        "entropy_normal",
        "entropy_reduce",
        "weightless_normal",
        "weightless_reduce",
    )
    return {
        "genotype": searched["genotype"],
        **{k: last.get(k) for k in keys},
    }


def _retrain_unit(config, genotype, directory):
    from snas_tf.trainers.retrain import run_retrain

    retrained = run_retrain(config, genotype, directory)
    return {
        "genotype": retrained["genotype"],
        "val_accuracy": retrained["val_accuracy"],
        "parameters": retrained["parameters"],
    }


def run_unit(unit, args, state) -> dict:
    """Runs one unit; its inputs are earlier units' results in `state`."""
    name, kind, mode, seed, k = unit
    searches, retrain = configs(args, seed)
    directory = os.path.join(args.out, name)
    if kind == "search":
        return _search_unit(searches[mode], directory)
    if kind == "sample":
        from snas_tf.genotype import get_genotype
        from snas_tf.search_space import SearchSpace

        model = searches["snas"].model
        space = SearchSpace(model.primitives, model.num_nodes)
        child = get_genotype(state[f"search-snas-s{seed}"]["genotype"])
        target = child_parameters(child, retrain)
        genotypes, draws = sample_matched(
            target,
            args.random,
            space,
            lambda g: child_parameters(g, retrain),
            seed,
            exclude=[child],
        )
        return {
            "target_parameters": target,
            "draws": draws,
            "genotypes": [g.to_string() for g in genotypes],
        }
    if mode == "random":
        genotype = state[f"sample-s{seed}"]["genotypes"][k]
    else:
        genotype = state[f"search-{mode}-s{seed}"]["genotype"]
    return _retrain_unit(retrain, genotype, directory)


def settings(args) -> dict:
    """What the figures depend on; a state file of other settings is
    refused rather than mixed in."""
    searches, retrain = configs(args, 0)
    return {
        "seeds": list(args.seeds),
        "random": args.random,
        "search": {m: config_to_dict(c) for m, c in searches.items()},
        "retrain": config_to_dict(retrain),
    }


def _load_state(path, wanted):
    if not os.path.exists(path):
        return {"settings": wanted, "units": {}}
    with open(path) as f:
        state = json.load(f)
    if state["settings"] != wanted:
        raise ValueError(
            f"{path} holds a run of other settings (seeds, epochs, "
            "overrides); use another --out."
        )
    return state


def run(args, progress=None) -> dict:
    """Runs every unit not yet in `--out`'s state file; returns the
    results (also written to `results.json` and `table.md`)."""
    say = progress or (lambda *_: None)
    wanted = json.loads(json.dumps(settings(args)))
    with dir_lock.hold(args.out, "--out"):
        path = os.path.join(args.out, STATE_FILE)
        state = _load_state(path, wanted)
        units = plan(args.seeds, args.random)
        start = time.perf_counter()
        ran = 0
        for i, unit in enumerate(units, 1):
            name = unit[0]
            if name in state["units"]:
                continue
            began = time.perf_counter()
            result = run_unit(unit, args, state["units"])
            result["seconds"] = round(time.perf_counter() - began, 1)
            state["units"][name] = result
            write_atomic(path, json.dumps(state, indent=2) + "\n")
            ran += 1
            say(_progress_line(units, i, state["units"], start))
        results = aggregate(state["units"], args.seeds, args.random)
        results["units_run"] = ran
        results["finished_utc"] = datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"
        )
        results["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs"
        results["settings"] = {
            "seeds": list(args.seeds),
            "random": args.random,
            "search_epochs": wanted["search"]["snas"]["search"]["epochs"],
            "retrain_epochs": wanted["retrain"]["train"]["epochs"],
            "override": list(args.override),
            "retrain_override": list(args.retrain_override),
        }
        write_atomic(
            os.path.join(args.out, "results.json"),
            json.dumps(results, indent=2) + "\n",
        )
        write_atomic(os.path.join(args.out, "table.md"), markdown(results))
    return results


def _pace_key(unit):
    """Units that take about as long: a search of one mode, any
    retraining, a sampling."""
    return (unit[1], unit[2] if unit[1] == "search" else "")


def _progress_line(units, i, done, start):
    """A bar, the unit just done and the time left: each unit left at
    the mean time of the finished units of its `_pace_key`, or of all."""
    seconds = {}
    for u in units:
        if u[0] in done:
            seconds.setdefault(_pace_key(u), []).append(done[u[0]]["seconds"])
    every = [t for times in seconds.values() for t in times]
    left = 0.0
    for u in units:
        if u[0] not in done:
            times = seconds.get(_pace_key(u), every)
            left += sum(times) / len(times)
    elapsed = time.perf_counter() - start
    name = units[i - 1][0]
    bar = "#" * (20 * i // len(units))
    return (
        f"[consistency] [{bar:<20}] {i}/{len(units)} {name} "
        f"{done[name]['seconds']:.0f} s; elapsed {elapsed / 60:.1f} min, "
        f"~{left / 60:.0f} min left"
    )


def _stats(values) -> dict:
    import numpy as np

    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "n": len(values),
    }


# The table's columns: (name, unit kind, key of the unit's result).
COLUMNS = (
    ("supernet_accuracy", "search", "val_accuracy"),
    ("child_accuracy", "search", "val_child_accuracy"),
    ("retrained_accuracy", "retrain", "val_accuracy"),
    ("entropy_normal", "search", "entropy_normal"),
    ("entropy_reduce", "search", "entropy_reduce"),
    ("weightless_normal", "search", "weightless_normal"),
    ("weightless_reduce", "search", "weightless_reduce"),
    ("parameters", "retrain", "parameters"),
)


def seed_rows(units, seeds, num_random) -> list:
    """One row per seed and cell (snas, darts, random0, ...): the
    columns its units have, and its genotype."""
    rows = []
    for s in seeds:
        cells = [*MODES, *(f"random{k}" for k in range(num_random))]
        for cell in cells:
            found = {
                kind: units.get(f"{kind}-{cell}-s{s}", {})
                for kind in ("search", "retrain")
            }
            row = {"seed": s, "cell": cell}
            for name, kind, key in COLUMNS:
                row[name] = found[kind].get(key)
            row["genotype"] = found["retrain"]["genotype"]
            rows.append(row)
    return rows


def aggregate(units, seeds, num_random) -> dict:
    """Mean and (population) std over seeds of each mode's columns, the
    random cells' over every seed and draw, and per seed whether the
    retrained SNAS child beat each random cell of its parameter count."""
    per_seed = seed_rows(units, seeds, num_random)
    rows = {}
    for mode in (*MODES, "random"):
        mine = [r for r in per_seed if r["cell"].startswith(mode)]
        rows[mode] = {
            name: _stats(r[name] for r in mine) for name, _, _ in COLUMNS
        }
        rows[mode]["genotypes"] = [r["genotype"] for r in mine]
    versus = []
    for s in seeds:
        snas = units[f"retrain-snas-s{s}"]["val_accuracy"]
        accs = [
            units[f"retrain-random{k}-s{s}"]["val_accuracy"]
            for k in range(num_random)
        ]
        sample = units[f"sample-s{s}"]
        versus.append(
            {
                "seed": s,
                "snas_retrained": snas,
                "random_retrained": accs,
                "snas_beats": sum(snas > a for a in accs),
                "target_parameters": sample["target_parameters"],
                "draws": sample["draws"],
            }
        )
    seconds = sum(u["seconds"] for u in units.values())
    return {
        "benchmark": "consistency",
        "rows": rows,
        "per_seed": per_seed,
        "snas_vs_random": versus,
        "unit_seconds": round(seconds, 1),
    }


def _cells(r, fmt) -> list:
    """The table cells of a row of values or of mean/std dicts."""
    specs = {"accuracy": "pct", "entropy": ".2f", "weightless": ".0f"}

    def one(name):
        value = r[name]
        spec = next((v for k, v in specs.items() if k in name), ",.0f")
        return fmt(value, spec)

    return [
        one("supernet_accuracy"),
        one("child_accuracy"),
        one("retrained_accuracy"),
        f"{one('entropy_normal')} / {one('entropy_reduce')}",
        f"{one('weightless_normal')} / {one('weightless_reduce')}",
        one("parameters"),
    ]


def _value(value, spec):
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if spec == "pct" else format(value, spec)


def _mean_std(stats, spec):
    if stats["mean"] is None:
        return "-"
    if spec == "pct":
        return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"
    spec = ".1f" if spec == ".0f" else spec
    return f"{format(stats['mean'], spec)} ± {format(stats['std'], spec)}"


TABLE_HEADER = (
    "| | supernet val % | child, no retraining % | retrained child % | "
    "entropy normal / reduce (nats) | weightless normal / reduce | "
    "child params |"
)
LABELS = {"snas": "SNAS (edge_all)", "darts": "DARTS, 1st order (top2)"}


def markdown(results) -> str:
    """The results as Markdown: mean ± std over seeds, the SNAS child
    against the random cells, then every seed's row."""
    rows = results["rows"]
    lines = [TABLE_HEADER, "|---|---|---|---|---|---|---|"]
    for mode in MODES:
        cells = _cells(rows[mode], _mean_std)
        lines.append(f"| {LABELS[mode]} | {' | '.join(cells)} |")
    n = rows["random"]["retrained_accuracy"]["n"]
    cells = _cells(rows["random"], _mean_std)
    label = f"random, ±{PARAM_TOLERANCE:.0%} SNAS params (n={n})"
    lines.append(f"| {label} | {' | '.join(cells)} |")
    beats = sum(s["snas_beats"] for s in results["snas_vs_random"])
    total = sum(len(s["random_retrained"]) for s in results["snas_vs_random"])
    lines += [
        "",
        f"Retrained SNAS child above the random cell of its seed: {beats} "
        f"of {total}.",
        "",
        TABLE_HEADER.replace("| |", "| seed | cell |", 1) + " genotype |",
        "|---" * 9 + "|",
    ]
    for r in results["per_seed"]:
        cells = " | ".join(_cells(r, _value))
        # A `|` separates table cells even inside a code span.
        genotype = r["genotype"].replace("|", "\\|")
        lines.append(f"| {r['seed']} | {r['cell']} | {cells} | `{genotype}` |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument(
        "--random",
        type=int,
        help="random cells per seed (default 5; --quick 1)",
    )
    parser.add_argument(
        "--out",
        default=str(harness.REPO / "runs" / "consistency"),
        help="output directory (default runs/consistency)",
    )
    parser.add_argument("--search-epochs", type=int)
    parser.add_argument("--retrain-epochs", type=int)
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="search config override (both modes)",
    )
    parser.add_argument(
        "--retrain-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="retraining config override (every child)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK} unless given",
    )
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else {"seeds": [0, 1, 2], "random": 5}
    for key, value in defaults.items():
        if key in ("override", "retrain_override"):
            setattr(args, key, [*value, *getattr(args, key)])
        elif getattr(args, key) is None:
            setattr(args, key, value)
    if args.random < 1 or len(set(args.seeds)) != len(args.seeds):
        parser.error("--random must be >= 1 and --seeds distinct.")
    args.out = str(pathlib.Path(args.out))
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        settings(args)
    except ValueError as error:
        print(f"consistency: {error}", file=sys.stderr)
        sys.exit(2)

    def say(line):
        print(line, file=sys.stderr, flush=True)

    # The jobs' Keras output goes to stderr with the progress: stdout is
    # the JSON only.
    with contextlib.redirect_stdout(sys.stderr):
        results = run(args, say)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
