"""One writer per output directory: `hold(directory)`.

A job holds an exclusive `fcntl.flock` on `DIRECTORY/.snas.lock` (which
holds its pid, for the message) for its whole run. A second job on the
same directory fails at once with one line naming the directory and the
holder's pid, and touches nothing. The kernel drops the lock with its
process, so a SIGKILLed job leaves at most an unlocked file behind, and
the same command run again takes it and resumes.

A process may hold a directory several times (the command line takes it
before TensorFlow is imported, the job again): the lock counts per
process and is released with its last holder. That release deletes the
lock file, and the directory and the parents it created when it was
missing if they are still empty, so a job that failed before writing
leaves nothing. Imports no TensorFlow.
"""

import contextlib
import errno
import fcntl
import functools
import inspect
import os
import threading

LOCK_NAME = ".snas.lock"

# Held locks of this process: real path -> [fd, count, created dirs].
_held = {}
_guard = threading.Lock()


class DirectoryLocked(ValueError):
    """Another live process is writing the directory."""


def _missing_dirs(directory):
    """The directories `os.makedirs(directory)` would create, deepest
    first."""
    missing = []
    path = os.path.abspath(directory)
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def _holder(path):
    """The pid written in the lock file, as text ("?" if unreadable)."""
    try:
        with open(path) as f:
            return f.read().strip() or "?"
    except OSError:
        return "?"


def _lock(directory, what):
    """Locks `directory/LOCK_NAME`; returns the locked fd."""
    path = os.path.join(directory, LOCK_NAME)
    # Another holder may delete the file between our open and our flock:
    # the lock counts only if the path still names the file we locked.
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise DirectoryLocked(
                f"{what} {directory} is being written by process "
                f"{_holder(path)} (it holds {path}); wait for it to end or "
                "use another directory."
            ) from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)
    raise DirectoryLocked(f"Could not lock {path}: it keeps being replaced.")


def acquire(directory, what="directory") -> str:
    """Takes the lock of `directory` (created if missing) for this
    process; returns the key for `release`.

    Raises:
        DirectoryLocked: if another process holds it (nothing is created
            or changed then).
    """
    directory = os.fspath(os.path.expanduser(directory))
    with _guard:
        created = _missing_dirs(directory)
        os.makedirs(directory, exist_ok=True)
        key = os.path.realpath(directory)
        if key in _held:
            _held[key][1] += 1
            return key
        try:
            fd = _lock(directory, what)
        except BaseException:
            _remove_empty(created)
            raise
        _held[key] = [fd, 1, created]
        return key


def release(key) -> None:
    """Drops one hold of `acquire`'s `key`; the last one unlocks."""
    with _guard:
        entry = _held[key]
        entry[1] -= 1
        if entry[1]:
            return
        del _held[key]
        fd, _, created = entry
        path = os.path.join(key, LOCK_NAME)
        # Deleted while still locked, so no other process can have taken
        # this file meanwhile; one that opened it retries on a new one.
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
        _remove_empty(created)


def _remove_empty(created):
    for path in created:
        try:
            os.rmdir(path)
        except OSError:  # not empty: the job wrote something
            return


@contextlib.contextmanager
def hold(directory, what="directory"):
    """`acquire` for the `with` block; `what` names the directory in the
    error (e.g. "--model-dir")."""
    key = acquire(directory, what)
    try:
        yield key
    finally:
        release(key)


def holding(parameter, what=None):
    """Decorator: each call holds the lock of the directory its argument
    `parameter` names (`what` names it in the error; default the
    parameter's name), without a second function to forward to."""

    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            with hold(bound.arguments[parameter], what or parameter):
                return fn(*args, **kwargs)

        return call

    return decorate


def held(directory) -> bool:
    """Whether this process holds `directory`."""
    return os.path.realpath(os.path.expanduser(directory)) in _held
