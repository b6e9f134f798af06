"""End-to-end: a tiny retrain on two local workers under
MultiWorkerMirroredStrategy (TF_CONFIG on 127.0.0.1), through the Keras
shim of snas_tf.distribute_compat, against the same retrain on one device.

A worker whose peer never comes hangs forever and ignores SIGTERM
(docs/tensorflow-notes.md §3), so every process gets a deadline and is
SIGKILLed by PID.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

SCRIPT = (
    pathlib.Path(__file__).parents[1] / "support" / "multi_worker_retrain.py"
)
NUM_WORKERS = 2
TIMEOUT_S = 240  # measured: 47-74 s for the three on two busy cores

# TensorFlow's own kernels, not oneDNN's: on a 3-cell variant of this run
# oneDNN broke exact max-pool ties (ReLU zeros) differently in a worker
# process than in a local one (two FactorizedReduce kernels off by 0.11
# after one SGD step, every other weight within 1e-7). With TF's kernels the
# two workers equal the one-device run to 3e-7 (measured).
ENV = {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}


def _free_ports(count):
    """`count` distinct free TCP ports on 127.0.0.1 (all held open while
    picked, so none is returned twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _kill(process):
    """SIGKILL by PID (SIGTERM is ignored by a worker stuck in a
    collective), then reap it."""
    if process.poll() is None:
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:  # exited meanwhile
            pass
        process.wait()


def _run_all(jobs, log_dir, timeout):
    """Runs the worker script once per job, all at once.

    Args:
        jobs: {name: (script arguments, extra environment)}.
        log_dir: where `<name>.log` (stdout and stderr) goes.
        timeout: seconds until every survivor is SIGKILLed.

    Returns:
        {name: exit code, None for a process killed at the deadline}. A
        failing process ends the wait at once: its peers would hang.
    """
    # No TF_CONFIG of our own leaks into the one-device run.
    base = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    processes = {}
    try:
        for name, (args, env) in jobs.items():
            with open(log_dir / f"{name}.log", "wb") as log:
                processes[name] = subprocess.Popen(
                    [sys.executable, str(SCRIPT), *args],
                    env={**base, **ENV, **env},
                    cwd=log_dir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            codes = [p.poll() for p in processes.values()]
            if None not in codes or any(codes):
                break
            time.sleep(0.5)
        return {name: p.poll() for name, p in processes.items()}
    finally:
        for process in processes.values():
            _kill(process)


def _jobs(model_dir, reference_dir):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(NUM_WORKERS)]}
    jobs = {}
    for index in range(NUM_WORKERS):
        task = {"type": "worker", "index": index}
        tf_config = json.dumps({"cluster": cluster, "task": task})
        jobs[f"worker{index}"] = ([str(model_dir)], {"TF_CONFIG": tf_config})
    # The same retrain, global batch and seed on one device.
    jobs["one_device"] = ([str(reference_dir), "runtime.strategy=default"], {})
    return jobs


def _report(codes, log_dir, chars=3000):
    return "\n".join(
        f"--- {name} (exit {code}) ---\n"
        + (log_dir / f"{name}.log").read_text(errors="replace")[-chars:]
        for name, code in codes.items()
    )


def _weights(path):
    return keras.saving.load_model(path, compile=False).get_weights()


@pytest.mark.slow
def test_two_workers_train_like_one_device(tmp_path):
    model_dir, reference_dir = tmp_path / "run", tmp_path / "one_device"
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    codes = _run_all(_jobs(model_dir, reference_dir), log_dir, TIMEOUT_S)
    if None in codes.values():
        pytest.fail(f"Killed after {TIMEOUT_S} s:\n{_report(codes, log_dir)}")
    assert not any(codes.values()), _report(codes, log_dir)

    # The chief writes into model_dir, worker 1 into workers/1.
    chief_path = model_dir / "model.keras"
    chief = _weights(chief_path)
    worker = _weights(model_dir / "workers" / "1" / "model.keras")
    assert len(chief) == len(worker) > 0
    for a, b in zip(chief, worker, strict=True):
        np.testing.assert_array_equal(a, b)
    for out in (model_dir, model_dir / "workers" / "1"):
        epochs = json.loads((out / "history.json").read_text())["epochs"]
        assert len(epochs) == 1 and np.isfinite(epochs[0]["loss"])

    # Training happened: the BatchNorm moving means (initialised to 0, so
    # equal in any fresh initialisation) all moved.
    model = keras.saving.load_model(chief_path, compile=False)
    fresh = keras.models.clone_model(model)
    moved = {
        w.path: not np.array_equal(*map(keras.ops.convert_to_numpy, (w, f)))
        for w, f in zip(model.weights, fresh.weights, strict=True)
    }
    means = [path for path in moved if path.endswith("moving_mean")]
    assert means and all(moved[path] for path in means), moved

    # And it computed what one device computes (sync BatchNorm, summed
    # gradients): only the order of float additions differs.
    reference = _weights(reference_dir / "model.keras")
    for a, b in zip(chief, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
