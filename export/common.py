"""What every export target shares: the model to export and how a written
artifact is run for verification.

A target module `export/<target>.py` provides `export_<target>(...)`, which
writes files, and a loader returning a `Runner`: a callable from float32
images `(N, H, W, 3)`, preprocessed as the eval pipeline does
(`snas_tf.data.preprocess_eval`), to float32 logits `(N, K)`. The export
command compares every runner with the Keras model on the same batch.
"""

import dataclasses
import os
import shutil
import uuid
from collections.abc import Callable

import numpy as np

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
