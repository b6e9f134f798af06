"""Hides TensorFlow's known start-up lines from the `snas` command's stderr.

Importing TensorFlow on a machine without a GPU prints lines a CLI user
cannot act on (absl's pre-initialisation notice, the oneDNN banner, CUDA
driver and TensorRT absence, some at ERROR level). They come from C++,
where Python's logging cannot reach them, and TF_CPP_MIN_LOG_LEVEL=3 would
hide real errors too. So `filtered_stderr` points file descriptor 2 at a
pipe read by a small filter process that drops only lines matching
`KNOWN_LINES` and passes everything else on. A process, not a thread: if
TensorFlow aborts, the filter still drains the pipe, so the abort's own
message reaches the terminal.

Run as a script, this module is that filter (stdin to stdout); it imports
only the standard library, so it starts in isolated mode (`-I -S`).
"""

import contextlib
import os
import re
import select
import signal
import subprocess
import sys

# A C++ log line's prefix: absl's ("I0000 00:00:1.2  123 file.cc:45] ") or
# TF's older one ("2024-01-02 03:04:05.678901: I path/file.cc:45] ").
_CPP = (
    r"(?:[IWEF]\d{4} \d\d:\d\d:[\d.]+\s+\d+ "
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:[\d.]+: [IWEF] )\S+:\d+\] "
)

# The lines hidden: each a start-up notice of a CPU-only machine.
KNOWN_LINES = tuple(
    re.compile(pattern)
    for pattern in (
        r"^WARNING: All log messages before absl::InitializeLog\(\) is "
        r"called are written to STDERR$",
        _CPP + r"oneDNN custom operations are on\.",
        _CPP + r"Could not find cuda drivers on your machine, GPU will not "
        r"be used\.",
        _CPP + r"failed call to cuInit: ",
        _CPP + r"(?:retrieving CUDA diagnostic information for host|"
        r"hostname: |libcuda reported version is: |kernel reported version "
        r"is: |kernel driver does not appear to be running on this host)",
        _CPP + r"Unable to register cu(?:DNN|FFT|BLAS) factory: ",
        _CPP + r"Cannot dlopen some GPU libraries\.",
        r"^Skipping registering GPU devices\.\.\.$",
        _CPP + r"This TensorFlow binary is optimized to use available CPU "
        r"instructions",
        r"^To enable the following instructions: .* rebuild TensorFlow with "
        r"the appropriate compiler flags\.$",
        r"^(?:" + _CPP + r")?TF-TRT Warning: Could not find TensorRT$",
    )
)

# Seconds an unfinished line may wait for its end before it is passed on
# (a progress bar redraws one line with carriage returns, never ending it).
_PARTIAL_WAIT = 0.05


def is_known(line: str) -> bool:
    """Whether `line` (without its newline) is a known start-up line."""
    return any(pattern.search(line) for pattern in KNOWN_LINES)


def _write_all(fd, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def filter_stream(source: int, sink: int) -> None:
    """Copies file descriptor `source` to `sink` until end of file, minus
    the known lines. An unfinished line is passed on once no more bytes
    come for a moment, and the rest of it unfiltered."""
    pending, passing = b"", False
    while True:
        timeout = _PARTIAL_WAIT if pending else None
        if not select.select([source], [], [], timeout)[0]:
            _write_all(sink, pending)
            pending, passing = b"", True
            continue
        chunk = os.read(source, 65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip("\r")
            if passing or not is_known(text):
                _write_all(sink, line + b"\n")
            passing = False
    if pending and (
        passing or not is_known(pending.decode("utf-8", "replace"))
    ):
        _write_all(sink, pending)


@contextlib.contextmanager
def filtered_stderr():
    """File descriptor 2 filtered (module doc) while the context is open.

    Only for a process that owns its stderr (the `snas` command itself,
    not a test calling `main`). Without a filter process (it failed to
    start), stderr stays as it is."""
    sys.stderr.flush()
    saved = os.dup(2)
    read, write = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__)],
            stdin=read,
            stdout=saved,
            stderr=subprocess.DEVNULL,
            # Out of the terminal's process group: Ctrl-C stops the job,
            # not the filter, which ends when the pipe closes.
            start_new_session=True,
        )
    except OSError:
        os.close(read)
        os.close(write)
        os.close(saved)
        yield
        return
    os.close(read)
    os.dup2(write, 2)
    os.close(write)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe: the filter drains it and ends
        os.close(saved)
        try:
            # A process the job started may still hold the pipe open.
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        filter_stream(0, 1)
    except (BrokenPipeError, KeyboardInterrupt):
        pass
