"""Hand-made latency tables for tests: made-up timings, never measured."""

import zlib

from snas_tf.latency.entries import required_entries
from snas_tf.latency.table import LatencyTable
from snas_tf.latency.target import TargetNetwork

# A 3-cell (normal, reduce, reduce), 4-channel CIFAR-style target at 8x8
# over a two-op space (and `none`), two nodes per cell.
TINY_TARGET = TargetNetwork(
    network="cifar",
    channels=4,
    num_layers=3,
    image_size=8,
    num_classes=10,
    primitives=("none", "skip_connect", "sep_conv_3x3"),
    num_nodes=2,
)
# Digits retrain overrides giving TINY_TARGET.
TINY_TARGET_OVERRIDES = (
    "child.network=cifar",
    "child.channels=4",
    "child.num_layers=3",
    "child.auxiliary=false",
    "data.dataset=digits",
    "data.image_size=8",
)


def made_up_latency(entry_id: str) -> float:
    """A distinct, reproducible fake timing per id, in [10, 1010) µs."""
    return 10.0 + zlib.crc32(entry_id.encode()) % 1000


def hand_made_table(target=TINY_TARGET, path=None, fmt="fp32"):
    """A complete, valid table of `target` with made-up timings."""
    entries = {
        entry_id: {**entry.to_dict(), "latency_us": made_up_latency(entry_id)}
        for entry_id, entry in required_entries(target).items()
    }
    runtime = {
        "name": "hand-made",
        "version": None,
        "threads": 1,
        "format": fmt,
        "runs": 1,
        "warmup": 0,
        "cpu": None,
        "date": None,
        "source": "test",
    }
    table = LatencyTable(target.to_dict(), runtime, entries, path)
    if path is not None:
        table.save(path)
    return table
