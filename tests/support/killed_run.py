"""Runs the `snas` CLI and SIGKILLs it at a chosen point (resume tests).

Usage:
    python killed_run.py batch N ARGV...       killed after the N-th train
        step of this process, before that step is checkpointed
    python killed_run.py checkpoint N ARGV...  killed while writing the
        N-th checkpoint of this process: its weights file is half written
        under its temporary name, not yet renamed
    python killed_run.py verify N ARGV...      (`snas export`) killed as
        the N-th artifact's verification starts: it and the ones before
        are staged, nothing is published yet
    python killed_run.py publish N ARGV...     (`snas export`) killed before
        the N-th rename of the publish: the earlier ones are done
"""

import os
import signal
import sys

from snas_tf import checkpointing
from snas_tf.export import common, exporter
from snas_tf.trainers import cli


def _kill():
    os.kill(os.getpid(), signal.SIGKILL)


def _half_write(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


# mode: (owner, attribute, kill before the call?, what to do to the call's
# first path argument before the kill).
MODES = {
    # The guard is the first callback: the step is never checkpointed.
    "batch": (checkpointing.NaNGuard, "on_train_batch_end", False, None),
    "checkpoint": (
        checkpointing.ResumableCheckpoint,
        "_write_weights",
        False,
        _half_write,
    ),
    "verify": (exporter, "_evaluate", True, None),
    "publish": (common, "_replace", True, None),
}


def _kill_at_call(owner, name, at, before, damage):
    """Wraps `owner.name` to SIGKILL the process at its `at`-th call."""
    original = getattr(owner, name)
    calls = [0]

    def hooked(*args, **kwargs):
        calls[0] += 1
        if before and calls[0] == at:
            _kill()
        result = original(*args, **kwargs)
        if calls[0] == at:
            if damage is not None:
                # Methods get `self` first; the path is the next argument.
                damage(args[1] if isinstance(owner, type) else args[0])
            _kill()
        return result

    setattr(owner, name, hooked)


def main():
    mode, at, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if mode not in MODES:
        raise SystemExit(f"unknown mode {mode!r}: {', '.join(MODES)}")
    owner, name, before, damage = MODES[mode]
    _kill_at_call(owner, name, at, before, damage)
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
