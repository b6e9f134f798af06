"""What every export target shares: the model to export, how a written
artifact is run for verification, and how files are published.

A target module `export/<target>.py` provides `export_<target>(...)`, which
writes files, and a loader returning a `Runner`: a callable from float32
images `(N, H, W, 3)`, preprocessed as the eval pipeline does
(`snas_tf.data.preprocess_eval`), to float32 logits `(N, K)`. The export
command compares every runner with the Keras model on the same batch.

Everything is built in a hidden staging directory (`staging_dir`) and
renamed into place: one directory by `publish_dir`, a whole export by
`publish_journaled`, whose journal lets a killed publish be finished.
"""

import dataclasses
import json
import os
import shutil
import uuid
from collections.abc import Callable

import numpy as np

from snas_tf.atomic_files import write_atomic

# The journal of a publish in progress, in the output directory.
JOURNAL = ".publish.json"

Runner = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Artifact:
    """One written, loadable export.

    Attributes:
        name: format name, e.g. "saved_model", "tflite_int8", "onnx".
        path: the file or directory written.
        runner: runs the artifact: float images -> float logits.
        quantized: judged by top-1 agreement (int8, QAT) rather than by
            the float tolerance.
        notes: extra facts for the report (opset, threads, ...).
    """

    name: str
    path: str
    runner: Runner
    quantized: bool = False
    notes: dict = dataclasses.field(default_factory=dict)


def size_bytes(path) -> int:
    """Bytes of a file, or of every file under a directory."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(
        os.path.getsize(os.path.join(root, f))
        for root, _, files in os.walk(path)
        for f in files
    )


def publish_dir(build, final) -> None:
    """Moves a completed directory `build` to `final` in one rename.

    Raises:
        FileExistsError: if `final` exists (nothing is overwritten).
    """
    if os.path.exists(final):
        raise FileExistsError(f"{final!r} exists; not overwriting it.")
    os.makedirs(os.path.dirname(os.path.abspath(final)), exist_ok=True)
    os.rename(build, final)


def staging_dir(parent) -> str:
    """A fresh hidden directory under `parent` to build into (same file
    system, so `publish_dir` is an atomic rename)."""
    os.makedirs(parent, exist_ok=True)
    # Not `tempfile.mkdtemp`: its 0700 mode would stay on the published
    # directory, unreadable to a model server running as another user.
    # `os.mkdir` applies the umask like any other directory.
    path = os.path.join(parent, f".tmp-export-{uuid.uuid4().hex}")
    os.mkdir(path)
    return path


def remove_quietly(path) -> None:
    """Removes a staging file or directory, if it is still there."""
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def _replace(staged, final) -> None:
    """Moves a staged file or directory into place, replacing an old one."""
    shutil.rmtree(final + ".old", ignore_errors=True)  # a killed swap
    if os.path.isdir(final):
        old = final + ".old"
        os.rename(final, old)
        os.rename(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, final)


def publish_journaled(out, stage, moves, models_config=None) -> None:
    """Moves staged paths (relative to `stage`) to the same paths under
    `out`, as if in one step.

    The list is first written to `out/.publish.json`; a publish killed
    half-way is finished by `finish_publish`, so `out` never stays a mix
    of two exports.

    Args:
        out: the output directory.
        stage: a `staging_dir(out)` holding every path of `moves`.
        moves: paths relative to `stage`, moved in this order (put what
            marks completion, e.g. a report, last).
        models_config: a TF Serving root relative to `out` whose
            `models.config` is rewritten after the moves, or None.
    """
    os.makedirs(out, exist_ok=True)
    journal = {
        "stage": os.path.relpath(stage, out),
        "moves": list(moves),
        "models_config": models_config,
    }
    write_atomic(os.path.join(out, JOURNAL), json.dumps(journal) + "\n")
    finish_publish(out)


def finish_publish(out) -> bool:
    """Completes the publish recorded in `out/.publish.json`, if any.

    Each move is a rename, done only while its source is still staged, so
    finishing twice is harmless. Returns whether there was one.
    """
    path = os.path.join(out, JOURNAL)
    if not os.path.exists(path):
        return False
    with open(path) as f:
        journal = json.load(f)
    stage = os.path.join(out, journal["stage"])
    for rel in journal["moves"]:
        staged, final = os.path.join(stage, rel), os.path.join(out, rel)
        if os.path.exists(staged):
            os.makedirs(os.path.dirname(final), exist_ok=True)
            _replace(staged, final)
    if journal.get("models_config"):
        from snas_tf.export import serving

        # Lists every model served from that root.
        serving.write_models_config(os.path.join(out, journal["models_config"]))
    os.remove(path)
    remove_quietly(stage)
    return True
