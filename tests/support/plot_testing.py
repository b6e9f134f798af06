"""Shared helpers of the plot tests: a search's history.json with random
α, file writing and a PNG check."""

import json

import numpy as np
from matplotlib import image as mpimg

from snas_tf.genotype import get_genotype
from snas_tf.search_space import PRIMITIVES, SearchSpace

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPACE = SearchSpace()
GENOTYPE = get_genotype("SNAS_moderate")


def _softmax(rng, shape):
    e = np.exp(rng.normal(size=shape))
    return e / e.sum(axis=-1, keepdims=True)


def search_history(num_epochs, seed=0):
    """A history.json dict as `snas search` writes it, with random α."""
    rng = np.random.default_rng(seed)
    shape = (SPACE.num_edges, SPACE.num_ops)
    epochs = [
        {
            "epoch": e,
            "genotype": str(GENOTYPE),
            "temperature": 1.0 - 0.1 * e,
            "entropy_normal": 2.0 - 0.1 * e,
            "entropy_reduce": 2.0 - 0.05 * e,
            "expected_size": 1e6 - 1e4 * e,
            "expected_flops": 1e8 - 1e6 * e,
            "expected_mac": 5e7 - 1e5 * e,
            "loss": 2.0 - 0.1 * e,
            "accuracy": 0.3 + 0.05 * e,
            "val_accuracy": 0.3 + 0.04 * e,
            "val_child_accuracy": 0.2 + 0.04 * e,
            "alpha_normal": _softmax(rng, shape).tolist(),
            "alpha_reduce": _softmax(rng, shape).tolist(),
        }
        for e in range(num_epochs)
    ]
    return {
        "primitives": list(PRIMITIVES),
        "num_nodes": SPACE.num_nodes,
        "epochs": epochs,
        "history": {},
    }


def write(path, data):
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
