"""Atomic file writes: a file is written under a temporary name beside
its target, then renamed over it, so a reader or a crash never sees a
half-written file, and a failed write keeps the previous one.
"""

import os
import shutil
import uuid


def replace_atomic(path, write) -> None:
    """Calls `write(tmp)` for a hidden temporary path beside `path` (same
    name, so suffix checks such as Keras' `.weights.h5` pass), then renames
    it over `path`: a crash never leaves a half-written `path`, and a
    failed write leaves nothing behind."""
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{uuid.uuid4().hex[:8]}-{name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)


def write_atomic(path, data: str | bytes) -> None:
    """Writes `data` (text, or bytes written as they are) to `path`
    atomically (`replace_atomic`)."""
    mode = "wb" if isinstance(data, bytes) else "w"

    def write(tmp):
        with open(tmp, mode) as f:
            f.write(data)

    replace_atomic(path, write)


__all__ = ["replace_atomic", "write_atomic"]
