"""The side file that lets an interrupted latency-table build resume.

`PartialTimings` appends one JSON line per timed entry to `<table>.partial`
(flushed and synced), after a first line holding the build's settings
(target, format, threads, runs, runtime, CPU). A rerun with the same
settings skips the ids already there; a torn last line (a kill mid-write)
is ignored and that entry timed again. Different settings are refused
rather than mixed into one table. The finished table is written atomically
and the side file removed.
"""

import json
import os

from snas_tf.latency.table import check_timing


class PartialTimings:
    """Timings of an unfinished build, keyed by entry id.

    Args:
        path: the side file (`<table path>.partial`).
        settings: JSON-able description of the build; a side file made
            with other settings is refused.
    """

    def __init__(self, path, settings: dict):
        self.path = os.fspath(path)
        self.settings = json.loads(json.dumps(settings))

    def load(self) -> dict:
        """`{id: latency_us}` of a previous run with the same settings, or
        `{}` when there is no side file.

        Raises:
            ValueError: naming the first setting that differs.
        """
        if not os.path.exists(self.path):
            return {}
        with open(self.path) as f:
            lines = f.read().splitlines()
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                # A torn line: its entry is timed again.
                continue
        if not records or records[0].get("settings") is None:
            return {}
        previous = records[0]["settings"]
        for key in sorted(set(previous) | set(self.settings)):
            if previous.get(key) != self.settings.get(key):
                raise ValueError(
                    f"{self.path!r} holds the partial timings of a build "
                    f"with {key}={previous.get(key)!r}, not "
                    f"{self.settings.get(key)!r}; rerun with the same flags "
                    "to resume it, or delete the file to start over."
                )
        timings = {}
        for record in records[1:]:
            entry_id = record.get("id")
            if isinstance(entry_id, str):
                timings[entry_id] = check_timing(
                    entry_id, record.get("latency_us"), self.path
                )
        return timings

    def _append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def start(self) -> None:
        """Writes the settings line unless a resumable file exists."""
        if not os.path.exists(self.path) or not self.load():
            os.makedirs(
                os.path.dirname(os.path.abspath(self.path)), exist_ok=True
            )
            with open(self.path, "w") as f:
                f.write(json.dumps({"settings": self.settings}) + "\n")

    def add(self, entry_id: str, latency_us: float) -> None:
        """Records one entry's timing."""
        self._append({"id": entry_id, "latency_us": latency_us})

    def remove(self) -> None:
        if os.path.exists(self.path):
            os.remove(self.path)


__all__ = ["PartialTimings"]
