"""The `snas` command's stderr: TensorFlow's known start-up lines hidden,
everything else (and, with `--debug`, everything) shown."""

import os
import select
import subprocess
import sys
import threading

import pytest
from testing_utils import SNAS

from snas_tf.trainers import stderr_filter

# Lines as TensorFlow prints them on a machine without a GPU.
KNOWN = (
    "WARNING: All log messages before absl::InitializeLog() is called are "
    "written to STDERR",
    "I0000 00:00:1796588192.185811    4335 port.cc:153] oneDNN custom "
    "operations are on. You may see slightly different numerical results "
    "due to floating-point round-off errors from different computation "
    "orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796588192.186121    4335 cudart_stub.cc:31] Could not "
    "find cuda drivers on your machine, GPU will not be used.",
    "E0000 00:00:1796588195.425315    4335 cuda_platform.cc:52] failed call "
    "to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR "
    "(303)",
    "2024-01-02 03:04:05.678901: E external/local_xla/xla/stream_executor/"
    "cuda/cuda_dnn.cc:9261] Unable to register cuDNN factory: Attempting "
    "to register factory for plugin cuDNN when one has already been "
    "registered",
    "2024-01-02 03:04:05.678901: I tensorflow/core/platform/"
    "cpu_feature_guard.cc:182] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, "
    "rebuild TensorFlow with the appropriate compiler flags.",
    "2024-01-02 03:04:05.678901: W tensorflow/compiler/tf2tensorrt/utils/"
    "py_utils.cc:38] TF-TRT Warning: Could not find TensorRT",
)
OTHER = (
    "E0000 00:00:1796588195.425315    4335 op_kernel.cc:1830] OP_REQUIRES "
    "failed at conv_ops.cc:1068 : INVALID_ARGUMENT: filters=-12",
    "F0000 00:00:1796588195.425315    4335 threadpool.cc:40] Check failed: "
    "num_threads >= 1 (1 vs. -1)",
    "snas search: error: Config key 'search.epochs' must be >= 1, got 0.",
    "Traceback (most recent call last):",
    "oneDNN custom operations are on. (no log prefix: not TensorFlow's)",
    "",
)


@pytest.mark.parametrize("line", KNOWN)
def test_known_start_up_lines_are_hidden(line):
    assert stderr_filter.is_known(line)


@pytest.mark.parametrize("line", OTHER)
def test_other_lines_are_kept(line):
    assert not stderr_filter.is_known(line)


def test_filter_stream_drops_only_known_lines_and_passes_partial_ones():
    source, into = os.pipe()
    out, sink = os.pipe()
    thread = threading.Thread(
        target=stderr_filter.filter_stream, args=(source, sink)
    )
    thread.start()
    os.write(into, b"kept 1\n" + "\n".join(KNOWN).encode() + b"\n")
    os.write(into, b"kept 2\r\n" + KNOWN[3].encode() + b"\n12% |###\r")
    # A progress bar's unfinished line is passed on before the next bytes.
    ready, _, _ = select.select([out], [], [], 30)
    assert ready
    os.write(into, b"#\r13% |####\n" + KNOWN[3].encode())
    os.close(into)
    thread.join(timeout=30)
    os.close(sink)
    with os.fdopen(out, "rb") as f:
        data = f.read()
    assert data == b"kept 1\nkept 2\r\n12% |###\r#\r13% |####\n"


# The `snas` command with the plot subcommand replaced by one that writes
# a known line, another line and an unfinished one to file descriptor 2
# (as TensorFlow's C++ logging does), then aborts when asked.
HOOK = f"""
import os, sys
from snas_tf.trainers import cli

def fake(args):
    os.write(2, {KNOWN[3] + chr(10) + "real error" + chr(10)!r}.encode())
    os.write(2, b"unfinished")
    if os.environ.get("ABORT"):
        os.abort()

cli._run_plot = fake
sys.argv = ["snas", *sys.argv[1:]]
sys.exit(cli.main())
"""


@pytest.mark.parametrize("debug", [False, True])
def test_console_script_hides_known_lines_unless_debug(tmp_path, debug):
    argv = ["--debug"] * debug + ["plot", f"--model-dir={tmp_path}"]
    result = subprocess.run(
        [sys.executable, "-c", HOOK, *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    shown = KNOWN[3] + "\n" if debug else ""
    assert result.stderr == shown + "real error\nunfinished"


def test_filtered_lines_survive_an_abort(tmp_path):
    # The filter is a process of its own: it drains the pipe after the
    # command dies, so an abort's message is not lost.
    result = subprocess.run(
        [sys.executable, "-c", HOOK, "plot", f"--model-dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, ABORT="1"),
    )
    assert result.returncode != 0
    assert result.stderr == "real error\nunfinished"


def test_a_subcommand_that_imports_tensorflow_prints_no_start_up_lines():
    # No TF_CPP_MIN_LOG_LEVEL here: the command's own default applies.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [SNAS, "summary", "--genotype=SNAS_mild", "--layers=3"]
        + ["--channels=4", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert '"params"' in result.stdout
    assert result.stderr == ""
