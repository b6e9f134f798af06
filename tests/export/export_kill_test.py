"""SIGKILL a `snas export` mid-way: nothing is published, and the same
command run again publishes TF Serving version 1."""

import json
import os
import signal

import pytest
from testing_utils import run_snas

from snas_tf import dir_lock
from snas_tf.export import common, serving

# A fresh (untrained) tiny network; three artifacts, verified in this
# order: saved_model, tflite_fp32 (serving is the SavedModel's copy).
EXPORT = [
    "export",
    "--genotype=SNAS_mild",
    "--override=child.channels=4",
    "--override=child.num_layers=3",
    "--override=data.dataset=digits",
    "--override=data.image_size=8",
    "--override=data.max_examples=400",
    "--runs=1",
    "--formats",
    "saved_model",
    "serving",
    "tflite_fp32",
]


@pytest.mark.slow
def test_a_killed_export_publishes_nothing_and_a_rerun_publishes_v1(
    tmp_path,
):
    out = tmp_path / "out"
    argv = [*EXPORT, f"--out={out}"]

    # Killed as tflite_fp32's verification starts: the SavedModel is
    # staged and verified, the TFLite file staged.
    killed = run_snas(argv, kill=["verify", "2"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # The killed process's lock file stays, unlocked (snas_tf.dir_lock).
    leftovers = [n for n in os.listdir(out) if n != dir_lock.LOCK_NAME]
    # Only the hidden staging directory is left: no report, no artifact,
    # no serving/ for a model server to pick up.
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-export-")
    stage = out / leftovers[0]
    assert sorted(os.listdir(stage)) == ["model_fp32.tflite", "saved_model"]
    assert serving.served_models(out / "serving") == []
    assert serving.next_version(out / "serving" / "snas") == 1

    rerun = run_snas(argv)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["serving_version_dir"] == os.path.join("serving", "snas", "1")
    assert [r["format"] for r in report["artifacts"]] == [
        "saved_model",
        "tflite_fp32",
    ]
    assert all(r["passed"] for r in report["artifacts"])
    assert (out / "serving" / "snas" / "1" / "saved_model.pb").is_file()
    assert sorted(os.listdir(out / "serving" / "snas")) == ["1"]
    assert (out / "saved_model" / "saved_model.pb").is_file()
    assert (out / "model_fp32.tflite").stat().st_size > 0
    visible = sorted(n for n in os.listdir(out) if not n.startswith("."))
    assert visible == [
        "model_fp32.tflite",
        "report.json",
        "report.md",
        "saved_model",
        "serving",
    ]

    # Killed half-way through publishing a second export: the journal
    # names what is left, and finishing it (as the next export into OUT
    # does first) completes version 2 without touching the staged files.
    killed = run_snas(argv, kill=["publish", "2"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / common.JOURNAL).is_file()
    old = json.loads((out / "report.json").read_text())
    assert old["serving_version_dir"] == os.path.join("serving", "snas", "1")
    assert common.finish_publish(str(out))
    report = json.loads((out / "report.json").read_text())
    assert report["serving_version_dir"] == os.path.join("serving", "snas", "2")
    assert sorted(os.listdir(out / "serving" / "snas")) == ["1", "2"]
    assert (
        sorted(n for n in os.listdir(out) if not n.startswith(".")) == visible
    )
    assert not (out / common.JOURNAL).exists()
