"""A latency table: its JSON file, the timings it imports, its checks.

The file (written atomically) holds, in microseconds (`UNIT`):

    {"format_version": 1, "unit": "us",
     "target": {network, channels, num_layers, image_size, num_classes,
                primitives, num_nodes, reduction_cells},
     "runtime": {name, version, threads, format, runs, warmup, cpu, date,
                 source, clock},
     "entries": {"<id>": {"kind": ..., <params>..., "latency_us": 123.4}},
     "calibration": {"scale": 1.2, ...}}      (optional)

The optional `calibration` (written by `benchmarks/latency_model.py
--write-calibrated`) holds a `scale` fitted on whole networks measured
against the table's sums: `latency_us` multiplies every timing by it, so
predictions, search costs and budgets are in calibrated microseconds
(docs/method.md §4); an optional `per_part_us` is added per timed part
(`snas_tf.latency.cost`). A table without it (every table before it existed)
reads as scale 1; readers that do not know it ignore it.

Entry ids are those of `snas_tf.latency.entries`. Timings made elsewhere
(a phone, with LiteRT's `benchmark_model`) are imported keyed by those ids,
from a CSV file with the header `id,latency_us` or a JSON file
`{"latency_us": {"<id>": 123.4, ...}}` (`read_timings`).

`check_table` is what a search, `snas summary` and `snas tune` rely on: a
table whose target or search space differ from the target network named
by the search config, a missing entry, a negative or non-finite timing or
an unknown format is refused with one line naming the entry and what was
expected. Imports no TensorFlow.
"""

import csv
import dataclasses
import json
import math
import os

from snas_tf.atomic_files import write_atomic
from snas_tf.latency.entries import required_entries
from snas_tf.latency.target import TargetNetwork

FORMAT_VERSION = 1
UNIT = "us"
# TFLite formats a table may be measured in (`snas latency-table --format`).
FORMATS = ("fp32", "int8")
# What a table's timings measure (`runtime.clock`; absent: "wall", the
# tables written before it existed): the wall-clock time of an invoke, or
# the CPU time of the invoking thread (one thread only), which other jobs
# on a shared machine do not inflate (docs/method.md §4).
CLOCKS = ("wall", "cpu")


def table_clock(runtime: dict) -> str:
    """The clock of a table's `runtime` ("wall" when it names none)."""
    return runtime.get("clock", "wall")


@dataclasses.dataclass(frozen=True)
class LatencyTable:
    """The timings of one target network on one runtime.

    Attributes:
        target: the target's sizes (`TargetNetwork.to_dict()`).
        runtime: how it was timed: `name`, `version`, `threads`, `format`
            (one of `FORMATS`), `runs`, `warmup`, `cpu`, `date`, `source`,
            `clock` (one of `CLOCKS`; absent in older tables: "wall").
        entries: `{id: {"kind": ..., <params>, "latency_us": float}}`.
        path: the file it was read from (for messages), or None.
        calibration: None, or `{"scale": float > 0, ...}` (how it was
            fitted: genotypes, scores, date).
    """

    target: dict
    runtime: dict
    entries: dict
    path: str | None = None
    calibration: dict | None = None

    @property
    def scale(self) -> float:
        """The calibration's scale (1 without a calibration)."""
        return float(self.calibration["scale"]) if self.calibration else 1.0

    @property
    def per_part_us(self) -> float:
        """The calibration's term added per timed part a network runs (0
        without one; negative for the interpreter's per-invoke cost that
        every op model's timing holds once and a whole network once in
        all; `snas_tf.latency.cost` adds it)."""
        if not self.calibration:
            return 0.0
        return float(self.calibration.get("per_part_us", 0.0))

    def latency_us(self, entry_id: str) -> float:
        """The timing of one entry in microseconds, times `scale`."""
        return float(self.entries[entry_id]["latency_us"]) * self.scale

    def uncalibrated(self) -> "LatencyTable":
        """The same table without its calibration (the raw timings)."""
        return dataclasses.replace(self, calibration=None)

    def to_dict(self) -> dict:
        data = {
            "format_version": FORMAT_VERSION,
            "unit": UNIT,
            "target": self.target,
            "runtime": self.runtime,
            "entries": self.entries,
        }
        if self.calibration is not None:
            data["calibration"] = self.calibration
        return data

    def save(self, path) -> None:
        """Writes the table as JSON, atomically."""
        write_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")


def _where(path) -> str:
    return f"Latency table {str(path)!r}" if path else "Latency table"


def load_table(path) -> LatencyTable:
    """Reads a table file; checks its structure, not its target.

    Raises:
        ValueError: naming the file, for a missing file, invalid JSON or a
            key of the wrong kind.
    """
    path = os.fspath(path)
    if not os.path.isfile(os.path.expanduser(path)):
        raise ValueError(f"{_where(path)} does not exist or is no file.")
    with open(os.path.expanduser(path)) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{_where(path)} is not valid JSON: {e}.") from e
    if not isinstance(data, dict):
        raise ValueError(f"{_where(path)} must hold a JSON object.")
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{_where(path)}: format_version is "
            f"{data.get('format_version')!r}; expected {FORMAT_VERSION}."
        )
    if data.get("unit") != UNIT:
        raise ValueError(
            f"{_where(path)}: unit is {data.get('unit')!r}; expected {UNIT!r}."
        )
    for key in ("target", "runtime", "entries"):
        if not isinstance(data.get(key), dict):
            raise ValueError(
                f"{_where(path)}: {key!r} must be a JSON object, got "
                f"{data.get(key)!r}."
            )
    for entry_id, entry in data["entries"].items():
        if not isinstance(entry, dict) or "latency_us" not in entry:
            raise ValueError(
                f"{_where(path)}: entry {entry_id!r} must be an object with "
                f"a 'latency_us' timing, got {entry!r}."
            )
    calibration = data.get("calibration")
    if calibration is not None:
        _check_calibration(calibration, path)
    return LatencyTable(
        data["target"], data["runtime"], data["entries"], path, calibration
    )


def _number(value) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _check_calibration(calibration, path) -> None:
    scale = calibration.get("scale") if isinstance(calibration, dict) else None
    per_part = (
        calibration.get("per_part_us", 0.0)
        if isinstance(calibration, dict)
        else None
    )
    if not (_number(scale) and scale > 0 and _number(per_part)):
        raise ValueError(
            f"{_where(path)}: calibration must be an object with a finite "
            f"'scale' > 0 and an optional finite 'per_part_us', got "
            f"{calibration!r}."
        )


def check_timing(entry_id, value, where) -> float:
    """`value` as a float if it is a finite number >= 0, else raises
    ValueError naming `entry_id`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        ok = False
    else:
        ok = math.isfinite(value) and value >= 0
    if not ok:
        raise ValueError(
            f"{where}: entry {entry_id!r} has latency_us {value!r}; expected "
            "a finite number of microseconds >= 0."
        )
    return float(value)


def check_table(table: LatencyTable, target: TargetNetwork, named_by=None):
    """Checks that `table` holds a usable timing of every entry of `target`.

    Args:
        table: a loaded table.
        target: the target network the search (or summary) is for.
        named_by: where `target` comes from, for the message (e.g. the
            retrain config named by `search.latency_target_config`).

    Returns:
        `table`.

    Raises:
        ValueError: one line naming the first mismatch: an unknown
            `runtime.format`, a target size or the search space differing
            from `target`, a missing entry, or a negative or non-finite
            timing.
    """
    where = _where(table.path)
    fmt = table.runtime.get("format")
    if fmt not in FORMATS:
        raise ValueError(
            f"{where}: runtime.format is {fmt!r}; expected one of {FORMATS}."
        )
    clock = table_clock(table.runtime)
    if clock not in CLOCKS:
        raise ValueError(
            f"{where}: runtime.clock is {clock!r}; expected one of {CLOCKS}."
        )
    source = f" ({named_by})" if named_by else ""
    for key, want in target.to_dict().items():
        got = table.target.get(key)
        if got != want:
            raise ValueError(
                f"{where}: target.{key} is {got!r}, but the target network"
                f"{source} has {want!r}; build the table for that network "
                "(snas latency-table --config ...)."
            )
    for entry_id in required_entries(target):
        if entry_id not in table.entries:
            raise ValueError(
                f"{where}: missing entry {entry_id!r}; expected a timing of "
                "every entry of the target network (run snas latency-table "
                "again: it resumes, or --import the missing timings)."
            )
        check_timing(entry_id, table.entries[entry_id]["latency_us"], where)
    return table


def read_timings(path) -> dict:
    """Timings of another device, `{id: latency_us}`, from a CSV file
    (header `id,latency_us`) or a JSON file (`{"latency_us": {id: value}}`),
    told apart by the `.csv` / `.json` suffix.

    Raises:
        ValueError: naming the file and the row or id, for another suffix,
            a missing or wrong header, a duplicate id, or a value that is
            not a finite number >= 0.
    """
    path = os.fspath(path)
    where = f"Timings file {path!r}"
    if not os.path.isfile(path):
        raise ValueError(f"{where} does not exist or is no file.")
    suffix = os.path.splitext(path)[1].lower()
    timings = {}
    if suffix == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows or [c.strip() for c in rows[0]] != ["id", "latency_us"]:
            raise ValueError(
                f"{where}: the first row must be the header 'id,latency_us', "
                f"got {','.join(rows[0]) if rows else 'nothing'!r}."
            )
        for number, row in enumerate(rows[1:], start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 2:
                raise ValueError(
                    f"{where}: row {number} has {len(row)} fields; expected "
                    "2 (id,latency_us)."
                )
            entry_id, text = row[0].strip(), row[1].strip()
            try:
                value = float(text)
            except ValueError:
                value = text
            if entry_id in timings:
                raise ValueError(f"{where}: id {entry_id!r} appears twice.")
            timings[entry_id] = check_timing(entry_id, value, where)
        return timings
    if suffix == ".json":
        with open(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where} is not valid JSON: {e}.") from e
        values = data.get("latency_us") if isinstance(data, dict) else None
        if not isinstance(values, dict):
            raise ValueError(
                f'{where} must hold {{"latency_us": {{"<id>": number, ...}}}}.'
            )
        return {k: check_timing(k, v, where) for k, v in values.items()}
    raise ValueError(
        f"{where}: unknown suffix {suffix!r}; expected '.csv' (header "
        "id,latency_us) or '.json' ({\"latency_us\": {id: value}})."
    )


__all__ = [
    "CLOCKS",
    "FORMATS",
    "FORMAT_VERSION",
    "UNIT",
    "LatencyTable",
    "check_table",
    "check_timing",
    "load_table",
    "read_timings",
    "table_clock",
]
