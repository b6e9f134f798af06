"""Holds the writer lock of a directory until killed (dir_lock tests).

Usage: `python lock_holder.py DIRECTORY [SECONDS]`: takes the lock with
`snas_tf.dir_lock`, prints "locked" and sleeps (60 s by default), so the
test can start a second job on the directory, or SIGKILL this one.
Imports no TensorFlow.
"""

import sys
import time

from snas_tf import dir_lock

if __name__ == "__main__":
    dir_lock.acquire(sys.argv[1], "--model-dir")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 60)
