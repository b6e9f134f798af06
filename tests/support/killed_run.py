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
from snas_tf.export import exporter
from snas_tf.trainers import cli


def _kill():
    os.kill(os.getpid(), signal.SIGKILL)


def main():
    mode, at, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    calls = [0]
    if mode == "batch":
        # The guard is the first callback: the step is never checkpointed.
        original = checkpointing.NaNGuard.on_train_batch_end

        def hooked(self, batch, logs=None):
            original(self, batch, logs)
            calls[0] += 1
            if calls[0] == at:
                _kill()

        checkpointing.NaNGuard.on_train_batch_end = hooked
    elif mode == "checkpoint":
        original = checkpointing.ResumableCheckpoint._write_weights

        def hooked(self, path):
            original(self, path)
            calls[0] += 1
            if calls[0] == at:
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
                _kill()

        checkpointing.ResumableCheckpoint._write_weights = hooked
    elif mode == "verify":
        original = exporter._evaluate

        def hooked(*args, **kwargs):
            calls[0] += 1
            if calls[0] == at:
                _kill()
            return original(*args, **kwargs)

        exporter._evaluate = hooked
    elif mode == "publish":
        original = exporter._publish

        def hooked(*args, **kwargs):
            calls[0] += 1
            if calls[0] == at:
                _kill()
            return original(*args, **kwargs)

        exporter._publish = hooked
    else:
        raise SystemExit(
            f"unknown mode {mode!r}: batch, checkpoint, verify or publish"
        )
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
