"""Shared helper of the tf.data pipeline tests (tests/snas_tf/data/)."""

import numpy as np


def epoch_arrays(ds):
    """One pass over a batched dataset as (images, labels) numpy arrays."""
    images, labels = [], []
    for x, y in ds:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)
