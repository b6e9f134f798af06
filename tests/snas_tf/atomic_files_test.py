"""Tests for snas_tf.atomic_files: a failed write keeps the old file and
leaves no temporary file behind."""

import os

import pytest

from snas_tf import atomic_files
from snas_tf.atomic_files import replace_atomic, write_atomic


@pytest.mark.parametrize("data", ["text é\n", b"\x89PNG\0bytes"])
def test_write_atomic_writes_text_and_bytes(tmp_path, data):
    path = tmp_path / "new" / "file"
    write_atomic(path, data)
    read = path.read_bytes()
    assert read == (data.encode() if isinstance(data, str) else data)
    assert os.listdir(path.parent) == ["file"]


def test_write_atomic_replaces_an_existing_file(tmp_path):
    path = tmp_path / "file.json"
    write_atomic(path, "old")
    write_atomic(str(path), "new")
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["file.json"]


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_failed_write_keeps_the_old_file(tmp_path, kind):
    path = tmp_path / "model.keras"
    path.write_text("old")

    def write(tmp):
        # Half written, then a failure (a full disk, a bad layer, ...).
        if kind == "directory":
            os.makedirs(os.path.join(tmp, "variables"))
        else:
            with open(tmp, "w") as f:
                f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomic(path, write)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["model.keras"]


def test_the_temporary_name_keeps_the_suffix(tmp_path):
    seen = []

    def write(tmp):
        seen.append(tmp)
        with open(tmp, "w") as f:
            f.write("weights")

    replace_atomic(tmp_path / "ckpt.weights.h5", write)
    # Beside the target and with its name, so suffix checks pass.
    assert os.path.dirname(seen[0]) == str(tmp_path)
    assert seen[0].endswith("-ckpt.weights.h5")
    assert os.listdir(tmp_path) == ["ckpt.weights.h5"]


def test_a_failed_rename_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "file"
    write_atomic(path, "old")

    def broken_replace(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(atomic_files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="rename failed"):
        write_atomic(path, "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["file"]
