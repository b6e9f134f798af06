"""One writer per directory (snas_tf.dir_lock): a second job is refused
with the holder's pid and touches nothing, the lock dies with its
process, and a process may take its own lock again."""

import os
import pathlib
import signal
import subprocess
import sys

import pytest
from testing_utils import SNAS

from snas_tf import dir_lock

HOLDER = os.path.join(os.path.dirname(__file__), "..", "support")
HOLDER = os.path.join(HOLDER, "lock_holder.py")


@pytest.fixture
def holder(tmp_path):
    """A live process holding the lock of `tmp_path / "run"`, which holds
    a file of a previous run."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.json").write_text("{}\n")
    process = subprocess.Popen(
        [sys.executable, HOLDER, str(run)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "locked"
    yield process, run
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()


def snapshot(root):
    """Relative path -> bytes (None for a directory) of all under root."""
    out = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            out[os.path.relpath(path, root)] = (
                None if name in dirs else pathlib.Path(path).read_bytes()
            )
    return out


def _argv(command, run):
    if command == "export":
        return ["export", f"--out={run}", "--genotype=SNAS_mild"]
    argv = [command, f"--model-dir={run}"]
    if command == "tune":
        argv.append("--max-params=3M")
    return argv


@pytest.mark.parametrize(
    "command", ["search", "retrain", "tune", "demo", "export"]
)
def test_a_second_job_is_refused_naming_the_holder_and_touches_nothing(
    holder, tmp_path, command
):
    """The real `snas` command, with a `tensorflow` that fails to import
    first on the path: the refusal comes before TensorFlow loads."""
    process, run = holder
    fake = tmp_path / "fake_tf" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('TF imported')\n")
    before = snapshot(run)
    done = subprocess.run(
        [SNAS, *_argv(command, run)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(fake.parent)),
        timeout=120,
    )
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"snas {command}: error: "), lines
    assert str(run) in lines[0] and f"process {process.pid} " in lines[0]
    assert snapshot(run) == before
    assert process.poll() is None  # the holder runs on, still locked
    with pytest.raises(dir_lock.DirectoryLocked):
        dir_lock.acquire(run)


def test_a_killed_holder_leaves_a_directory_a_new_job_can_lock(holder):
    process, run = holder
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    # The file stays, unlocked: the kernel dropped the flock.
    assert (run / dir_lock.LOCK_NAME).read_text() == f"{process.pid}\n"
    with dir_lock.hold(run):
        lock = run / dir_lock.LOCK_NAME
        assert lock.read_text() == f"{os.getpid()}\n"
    assert sorted(os.listdir(run)) == ["history.json"]


def test_the_same_process_may_lock_a_directory_again(tmp_path):
    run = tmp_path / "a" / "run"
    with dir_lock.hold(run):
        with dir_lock.hold(str(run) + "/"):  # the CLI, then the job
            assert dir_lock.held(run)
        assert dir_lock.held(run)
        assert os.listdir(run) == [dir_lock.LOCK_NAME]
    assert not dir_lock.held(run)
    # It created a/ and a/run and wrote nothing: both are gone.
    assert os.listdir(tmp_path) == []


def test_a_directory_written_under_the_lock_is_kept(tmp_path):
    run = tmp_path / "run"
    with dir_lock.hold(run):
        (run / "config.yaml").write_text("x: 1\n")
    assert os.listdir(run) == ["config.yaml"]
