"""SIGKILL a search and a retrain, resume them with the same command, and
compare with uninterrupted runs bit for bit (deterministic settings)."""

import json
import os
import signal

import h5py
import numpy as np
import pytest
from testing_utils import run_snas

from snas_tf.checkpointing import load_state

# 5 steps per epoch, 2 epochs; checkpoints after steps 2 and 4 of each.
SEARCH = [
    "search",
    "--override=model.channels=4",
    "--override=model.num_cells=3",
    "--override=model.num_nodes=2",
    "--override=model.primitives=[none, max_pool_3x3, skip_connect, "
    "sep_conv_3x3]",
    "--override=search.epochs=2",
    "--override=search.batch_size=16",
    "--override=data.dataset=digits",
    "--override=data.image_size=8",
    "--override=data.max_examples=96",
]
# 6 steps per epoch (48 examples, 7 held out), 2 epochs, drop-path on.
RETRAIN = [
    "retrain",
    "--genotype=SNAS_mild",
    "--override=child.channels=4",
    "--override=child.num_layers=3",
    "--override=child.auxiliary=false",
    "--override=train.epochs=2",
    "--override=train.batch_size=8",
    "--override=train.drop_path_prob=0.2",
    "--override=data.dataset=digits",
    "--override=data.image_size=8",
    "--override=data.max_examples=48",
    "--override=data.cutout=2",
]
RUNTIME = [
    "--override=runtime.deterministic=true",
    "--override=runtime.checkpoint_steps=2",
    "--override=runtime.verbose=0",
    "--override=runtime.intra_op_threads=1",
    "--override=runtime.inter_op_threads=1",
]


def _weights(model_dir):
    state = load_state(os.path.join(model_dir, "checkpoints"))
    arrays = {}
    with h5py.File(state["weights_path"]) as f:
        f.visititems(
            lambda name, item: (
                arrays.__setitem__(name, item[()])
                if isinstance(item, h5py.Dataset)
                else None
            )
        )
    return state, arrays


def _assert_same_run(resumed, reference):
    state, weights = _weights(resumed)
    ref_state, ref_weights = _weights(reference)
    assert (state["epoch"], state["step"]) == (ref_state["epoch"], 0)
    assert state["iterations"] == ref_state["iterations"]
    assert weights.keys() == ref_weights.keys()
    # Weights, both optimizers' slots and step counters, the temperature
    # and the seed generators' states.
    assert len(weights) > 10
    for name, value in ref_weights.items():
        np.testing.assert_array_equal(weights[name], value, err_msg=name)
    for name in ("genotype.json", "config.yaml"):
        with open(os.path.join(resumed, name)) as a:
            with open(os.path.join(reference, name)) as b:
                assert a.read() == b.read(), name


def _kill_twice_and_resume(tmp_path, job, kill_batch, kill_checkpoint):
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    argv = [*job, *RUNTIME]
    done = run_snas([*argv, f"--model-dir={reference}"])
    assert done.returncode == 0, done.stderr
    argv.append(f"--model-dir={resumed}")

    # 1. Killed mid-epoch, after an unsaved step.
    killed = run_snas(argv, kill=["batch", str(kill_batch)])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = load_state(resumed / "checkpoints")
    assert state["epoch"] == 0 and 0 < state["step"] < kill_batch
    assert not (resumed / "genotype.json").exists() or job[0] == "retrain"

    # 2. Resumed, then killed while writing a checkpoint.
    killed = run_snas(argv, kill=["checkpoint", str(kill_checkpoint)])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    leftovers = [n for n in os.listdir(resumed / "checkpoints") if ".tmp-" in n]
    assert leftovers, "the kill did not hit a checkpoint write"
    before = load_state(resumed / "checkpoints")
    assert (before["epoch"], before["step"]) > (state["epoch"], state["step"])

    # 3. The same command as the uninterrupted run finishes it.
    final = run_snas(argv)
    assert final.returncode == 0, final.stderr
    _assert_same_run(resumed, reference)
    return resumed, reference


@pytest.mark.slow
def test_killed_search_resumes_to_the_same_genotype_and_weights(tmp_path):
    resumed, _ = _kill_twice_and_resume(tmp_path, SEARCH, 3, 2)
    # The killed runs' partial epochs still leave one record per epoch.

    history = json.loads((resumed / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [0, 1]


@pytest.mark.slow
def test_killed_retrain_resumes_to_the_same_weights(tmp_path):
    resumed, reference = _kill_twice_and_resume(tmp_path, RETRAIN, 5, 2)
    assert (resumed / "model.keras").is_file()


@pytest.mark.slow
def test_killed_darts_search_resumes_to_the_same_genotype_and_weights(
    tmp_path,
):
    # Bi-level DARTS through run_search: 96 digits, 10% validation, the
    # rest halved into θ and α splits; batches of 8 give 5 steps an epoch.
    job = [
        *(a for a in SEARCH if "batch_size" not in a),
        "--override=search.batch_size=8",
        "--override=search.mode=darts",
    ]
    resumed, _ = _kill_twice_and_resume(tmp_path, job, 3, 2)
    history = json.loads((resumed / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [0, 1]
    last = history["epochs"][-1]
    assert {"arch_loss", "val_child_accuracy", "loss"} <= set(last)
    # The DARTS rule: two edges per node in both cells.
    genotype = json.loads((resumed / "genotype.json").read_text())
    for cell in ("normal", "reduce"):
        assert [len(node) for node in genotype[cell]] == [2, 2], cell
