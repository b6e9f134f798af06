"""Runs the benchmarks, prints one table and writes every result as JSON.

Each benchmark script runs in its own process (and each of its cases in
another, see `harness`); its JSON object goes, unchanged, into the output
file under `"benchmarks"`, with the command and its wall time. A script
that fails is recorded with its error and the others still run.

Usage:
    python benchmarks/run_all.py [--only search retrain export] [--quick]
        [--out benchmarks/results.json]

`--quick` is passed to every script (tiny networks, 2 steps: a smoke run
of the whole suite) and, unless `--out` is given, writes
`benchmarks/results_quick.json`, so a smoke run never replaces the figures
of a full run.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import harness

from snas_tf.atomic_files import write_atomic

HERE = pathlib.Path(__file__).resolve().parent
BENCHMARKS = {
    "search": "search_step.py",
    "retrain": "retrain_step.py",
    "export": "export_latency.py",
}
COLUMNS = (
    "benchmark",
    "setting",
    "s/step or ms",
    "first step s",
    "peak RSS GB",
    "GFLOP/s",
    "% of peak",
    "bytes",
)


def run_benchmark(name, quick) -> dict:
    """Runs one script; returns its JSON object (or an error)."""
    cmd = [sys.executable, str(HERE / BENCHMARKS[name])]
    if quick:
        cmd.append("--quick")
    say(f"{name}: {' '.join(cmd[1:])}")
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = round(time.perf_counter() - start, 1)
    say(f"{name}: done in {wall} s")
    try:
        result = json.loads(out.stdout)
    except json.JSONDecodeError:
        tail = "\n".join(out.stderr.strip().splitlines()[-15:])
        result = {
            "benchmark": BENCHMARKS[name].removesuffix(".py"),
            "error": f"exit {out.returncode}, no JSON: {tail[-2000:]}",
            "results": [],
        }
    result["command"] = " ".join(cmd[1:])
    result["wall_seconds"] = wall
    return result


def say(text):
    print(f"[run_all] {text}", file=sys.stderr, flush=True)


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def table_rows(benchmarks) -> list:
    """One tuple of strings per result, in `COLUMNS` order."""
    rows = []
    for bench in benchmarks:
        name = bench["benchmark"]
        if "error" in bench:
            rows.append((name, "-", "ERROR") + ("-",) * 5)
        for r in bench["results"]:
            setting = r.get("setting", "-")
            if "format" in r:
                setting = f"{setting}/{r['format']}"
            if r.get("mixed_precision"):
                setting += " bf16"
            if "error" in r:
                rows.append((name, setting, "ERROR") + ("-",) * 5)
                continue
            if "latency_ms_median" in r:
                value = f"{r['latency_ms_median']:.3f} ms"
                first = _fmt(r.get("first_run_seconds"), ".3f")
            else:
                value = f"{r['seconds_per_step']:.4f} s"
                first = _fmt(r.get("first_step_seconds"), ".2f")
            rows.append(
                (
                    name,
                    setting,
                    value,
                    first,
                    _fmt(r.get("peak_rss_gb"), ".2f"),
                    _fmt(r.get("gflops_per_second"), ".1f"),
                    _fmt(r.get("percent_of_peak"), ".1f"),
                    _fmt(r.get("bytes"), ",d"),
                )
            )
    return rows


def format_table(rows) -> str:
    """Plain-text table: text columns left-aligned, figures right."""
    widths = [
        max(len(str(c)) for c in column)
        for column in zip(COLUMNS, *rows, strict=True)
    ]

    def line(cells):
        return "  ".join(
            str(c).ljust(w) if i < 2 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(COLUMNS), rule, *map(line, rows)])


def errors(benchmarks) -> list:
    out = []
    for bench in benchmarks:
        if "error" in bench:
            out.append(f"{bench['benchmark']}: {bench['error']}")
        for r in bench["results"]:
            if "error" in r:
                where = "/".join(
                    str(r[k]) for k in ("setting", "format") if k in r
                )
                out.append(f"{bench['benchmark']} {where}: {r['error']}")
    return out


def _git_commit():
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=harness.REPO,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS)
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--out",
        help="JSON file (default: benchmarks/results.json, "
        "benchmarks/results_quick.json with --quick)",
    )
    args = parser.parse_args(argv)
    out = args.out or HERE / (
        "results_quick.json" if args.quick else "results.json"
    )
    started = datetime.datetime.now(datetime.UTC)
    benchmarks = [run_benchmark(name, args.quick) for name in args.only]
    results = {
        "started_utc": started.isoformat(timespec="seconds"),
        "quick": args.quick,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "peak_gflops": harness.PEAK_GFLOPS,
        "benchmarks": benchmarks,
    }
    write_atomic(out, json.dumps(results, indent=2) + "\n")
    print(format_table(table_rows(benchmarks)))
    problems = errors(benchmarks)
    for problem in problems:
        print(f"\nERROR {problem}")
    print(f"\nResults: {out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
