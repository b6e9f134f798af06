"""Fixture loading and tolerance checks of the parity tests with the
authors' code (tests/reference/, docs/parity.md)."""

import json
import pathlib

import numpy as np
import pytest

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "reference/fixtures"
# Per tensor: max|ours - ref| <= RTOL * max|ref| + ATOL.
RTOL, ATOL = 1e-4, 1e-6


def load_fixture(case, regenerate, folder=None):
    """(meta, {name: array}) of `fixtures/<case>.npz`; a missing file fails
    the test naming it and the command that writes it."""
    path = (folder or FIXTURES) / f"{case}.npz"
    if not path.is_file():
        pytest.fail(f"Missing fixture {path}; regenerate with {regenerate}.")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    return json.loads(str(arrays.pop("meta"))), arrays


def max_differences(pairs):
    """{tensor: (max|ours - ref|, max|ref|)}."""
    return {
        name: (
            float(np.max(np.abs(np.asarray(ours) - ref))),
            float(np.max(np.abs(ref))),
        )
        for name, (ours, ref) in pairs.items()
    }


def failures(pairs, rtol=RTOL, atol=ATOL):
    """Tensors over the tolerance, worst relative difference first."""
    bad = [
        (diff / max(top, 1e-30), name, diff, top)
        for name, (diff, top) in max_differences(pairs).items()
        if not diff <= rtol * top + atol
    ]
    return [
        f"{name}: max|diff| {diff:.3g} vs max|ref| {top:.3g}"
        for _, name, diff, top in sorted(bad, reverse=True)
    ]


def worst(pairs):
    """(max abs diff, max diff / max|ref|) over all tensors, for the
    figures of docs/parity.md."""
    diffs = max_differences(pairs).values()
    return (
        max(d for d, _ in diffs),
        max(d / max(t, 1e-30) for d, t in diffs),
    )
