"""Argument types and path checks of the `snas` command line.

Everything here runs before TensorFlow is imported, so a bad argument is
one line and exit status 2 without TensorFlow's start-up cost.
"""

import argparse
import contextlib
import os

from snas_tf import dir_lock


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def int_at_least(low, even=False):
    """An argparse type: a whole number >= `low` (and even, if asked)."""
    kind = "an even int" if even else "an int"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (even and value % 2):
            raise argparse.ArgumentTypeError(
                f"expected {kind} >= {low}, got {text!r}"
            )
        return value

    return parse


def count(text):
    """A budget: a whole positive count such as 3000000, 3e6, 3M or 2.5k."""
    scale = {"k": 10**3, "m": 10**6, "g": 10**9}.get(text[-1:].lower(), 1)
    try:
        value = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        value = float("nan")
    if not value.is_integer() or value < 1:
        raise argparse.ArgumentTypeError(
            "expected a whole positive count such as 3000000, 3e6, 3M or "
            f"2.5k, got {text!r}"
        )
    return int(value)


def pixels(text):
    """A pixel count: WIDTHxHEIGHT such as 4096x4096, or a count such as
    16777216 or 16M."""
    width, x, height = text.lower().partition("x")
    try:
        if not x:
            return count(text)
        if int(width) >= 1 and int(height) >= 1:
            return int(width) * int(height)
    except (ValueError, argparse.ArgumentTypeError):
        pass
    raise argparse.ArgumentTypeError(
        "expected WIDTHxHEIGHT such as 4096x4096 or a pixel count such as "
        f"16777216 or 16M, got {text!r}"
    )


_READS_MODEL_DIR = ("export", "plot")


def check_paths(args) -> None:
    """Fails on a path argument of the wrong kind (a file for a directory,
    a directory for a file, a missing input) before any work, and before
    TensorFlow is imported."""
    from snas_tf.config_checks import path_problem

    def check(flag, path, directory, must_exist):
        if path is None:
            return
        if must_exist and not os.path.exists(os.path.expanduser(path)):
            raise ValueError(f"{flag} {str(path)!r} does not exist.")
        problem = path_problem(path, directory)
        if problem:
            raise ValueError(f"{flag} {problem}.")

    for flag in ("--config", "--retrain-config"):
        for path in getattr(args, flag[2:].replace("-", "_"), None) or ():
            check(flag, path, directory=False, must_exist=True)
    genotype = getattr(args, "genotype", None)
    if genotype is not None and ("/" in genotype or genotype.endswith(".json")):
        # A missing file is reported where the genotype is read; a value
        # without "/" or ".json" is a registry name or a genotype string.
        check("--genotype", genotype, directory=False, must_exist=False)
    model_dir = getattr(args, "model_dir", None)
    check("--model-dir", model_dir, True, args.command in _READS_MODEL_DIR)
    check("--out", getattr(args, "out", None), True, False)


def job_lock(model_dir, flag="--model-dir", config=None):
    """The writer lock of the job's output directory (`snas_tf.dir_lock`),
    taken before TensorFlow is imported, so a second job on a directory in
    use fails at once. Workers of a multi-worker job share `--model-dir`:
    the job itself locks each worker's own directory."""
    if (
        config is not None
        and config.runtime.strategy == "multi_worker_mirrored"
    ):
        return contextlib.nullcontext()
    return dir_lock.hold(model_dir, flag)
