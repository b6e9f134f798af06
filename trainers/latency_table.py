"""`snas latency-table`: build, export or import a latency table.

Three jobs over the entries of one target network
(`snas_tf.latency.entries.required_entries`):

- `build_table`: each entry as a tiny model (`snas_tf.latency.op_models`),
  converted and timed here with LiteRT (`export.op_latency`); resumable
  through `<out>.partial` (`snas_tf.latency.partial`);
- `export_ops`: the same `.tflite` files and a `manifest.json` (id, file,
  entry parameters) into a directory, for timing on another device;
- `import_table`: that device's timings (`read_timings`) into a table.

Every table is checked (`check_table`) and written atomically.
"""

import datetime
import json
import os

from snas_tf.atomic_files import write_atomic
from snas_tf.latency.entries import required_entries
from snas_tf.latency.partial import PartialTimings
from snas_tf.latency.table import LatencyTable, check_table, read_timings
from snas_tf.latency.target import TargetNetwork

MANIFEST = "manifest.json"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _table(target, runtime, timings, path) -> LatencyTable:
    entries = required_entries(target)
    table = LatencyTable(
        target.to_dict(),
        runtime,
        {
            entry_id: {**entry.to_dict(), "latency_us": timings[entry_id]}
            for entry_id, entry in entries.items()
        },
        os.fspath(path),
    )
    return check_table(table, target)


def _progress(total, verbose):
    import keras

    return keras.utils.Progbar(total, verbose=1 if verbose else 0)


def _convert(entry, fmt):
    import keras

    from snas_tf.export.op_latency import convert_op_model
    from snas_tf.latency.op_models import entry_model

    keras.utils.set_random_seed(0)
    blob = convert_op_model(entry_model(entry), fmt)
    # Thousands of layers over a build: drop the finished models' state.
    keras.backend.clear_session()
    return blob


def build_table(
    target: TargetNetwork,
    out,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
    fmt: str = "fp32",
    verbose: bool = True,
    clock: str = "wall",
) -> LatencyTable:
    """Times every entry of `target` here and writes the table to `out`.

    An interrupted build run again with the same arguments skips the
    entries timed before (`<out>.partial`).

    Args:
        target: the target network.
        out: the table's path (JSON).
        threads: LiteRT interpreter threads.
        runs: timed runs per entry (the median is kept).
        warmup: untimed runs first.
        fmt: "fp32" or "int8".
        verbose: show a progress bar.
        clock: "wall" or "cpu" (`export.op_latency.time_op_model`).

    Returns:
        The written `LatencyTable`.

    Raises:
        ValueError: for a side file of another build's settings, or a bad
            clock (before any work).
    """
    from snas_tf.export.op_latency import (
        check_clock,
        runtime_info,
        time_op_model,
    )

    check_clock(clock, threads)

    runtime = {
        **runtime_info(),
        "threads": threads,
        "format": fmt,
        "runs": runs,
        "warmup": warmup,
        "clock": clock,
    }
    partial = PartialTimings(
        f"{os.fspath(out)}.partial", {"target": target.to_dict(), **runtime}
    )
    timings = partial.load()
    partial.start()
    entries = required_entries(target)
    bar = _progress(len(entries), verbose)
    tmp = f"{os.fspath(out)}.op.tflite"
    for done, (entry_id, entry) in enumerate(entries.items(), start=1):
        if entry_id not in timings:
            write_atomic(tmp, _convert(entry, fmt))
            timed = time_op_model(tmp, threads, runs, warmup, clock=clock)
            timings[entry_id] = round(timed, 3)
            partial.add(entry_id, timings[entry_id])
        bar.update(done)
    if os.path.exists(tmp):
        os.remove(tmp)
    runtime.update(date=_now(), source="measured")
    table = _table(target, runtime, timings, out)
    table.save(out)
    partial.remove()
    return table


def export_ops(target: TargetNetwork, out_dir, fmt="fp32", verbose=True):
    """Writes every entry's `.tflite` model and `manifest.json`.

    A file already there (from an interrupted export: each is written
    atomically) is kept. The manifest holds the target, the format and,
    per id, the file and what the entry is (kind, channels, side, stride,
    ...: the input shapes are in each file).

    Returns:
        The manifest's path.
    """
    entries = required_entries(target)
    bar = _progress(len(entries), verbose)
    listed = {}
    for done, (entry_id, entry) in enumerate(entries.items(), start=1):
        name = f"{entry_id}.tflite"
        path = os.path.join(out_dir, name)
        if not os.path.exists(path):
            write_atomic(path, _convert(entry, fmt))
        listed[entry_id] = {**entry.to_dict(), "file": name}
        bar.update(done)
    manifest = {
        "format_version": 1,
        "target": target.to_dict(),
        "format": fmt,
        "entries": listed,
    }
    path = os.path.join(out_dir, MANIFEST)
    write_atomic(path, json.dumps(manifest, indent=1) + "\n")
    return path


def import_table(
    target: TargetNetwork,
    timings_file,
    out,
    threads: int = 1,
    fmt: str = "fp32",
    device: str | None = None,
) -> LatencyTable:
    """Builds a table from another device's timings of `target`.

    Args:
        target: the target network the timings are of.
        timings_file: CSV (`id,latency_us`) or JSON
            (`{"latency_us": {id: value}}`) timings, in µs.
        out: the table's path.
        threads: the threads the timings were made with.
        fmt: the format of the timed models ("fp32" or "int8").
        device: a name for the device, kept in the metadata.

    Raises:
        ValueError: for an id that is no entry of `target`, a missing
            entry, or a bad value (naming it).
    """
    timings = read_timings(timings_file)
    entries = required_entries(target)
    for entry_id in timings:
        if entry_id not in entries:
            raise ValueError(
                f"Timings file {os.fspath(timings_file)!r}: {entry_id!r} is "
                "no entry of the target network; expected the ids of its "
                "manifest (snas latency-table --export-ops)."
            )
    for entry_id in entries:
        if entry_id not in timings:
            raise ValueError(
                f"Timings file {os.fspath(timings_file)!r}: missing entry "
                f"{entry_id!r}; expected a timing of every id of the "
                "manifest."
            )
    runtime = {
        "name": "imported",
        "version": None,
        "cpu": device,
        "threads": threads,
        "format": fmt,
        "runs": None,
        "warmup": None,
        "date": _now(),
        "source": os.path.abspath(os.fspath(timings_file)),
    }
    table = _table(target, runtime, timings, out)
    table.save(out)
    return table


__all__ = ["MANIFEST", "build_table", "export_ops", "import_table"]
