"""Tests of the per-image preprocessing (snas_tf.data.preprocessing):
training augmentation, cutout and the evaluation preprocessing.
"""

import numpy as np
import pytest
import tensorflow as tf
from pipeline_testing import epoch_arrays

from snas_tf import data
from snas_tf.config import DataConfig
from snas_tf.data.pipelines import _train_pipeline
from snas_tf.data.preprocessing import _cutout
from snas_tf.data.sources import _Source


def _random_source(n=8, shape=(12, 12, 3), seed=0):
    """A source of random uint8 images labelled by their index."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    ds = tf.data.Dataset.from_tensor_slices((images, np.arange(n)))
    return _Source(ds, n, n, shape), images


def _one_epoch(source, cfg, batch_size):
    """The (uncarved) training pipeline of one epoch, and its steps."""
    return _train_pipeline(source, cfg, batch_size, 0, False, (0, 1))


# --- augmentation -----------------------------------------------------------


def test_augment_none_equals_eval_preprocessing():
    cfg = DataConfig(
        dataset="image_folder", image_size=8, augment="none", cutout=0
    )
    source, raw = _random_source()
    ds, steps = _one_epoch(source, cfg, 4)
    assert steps == 2
    x, y = epoch_arrays(ds)
    assert sorted(y) == list(range(8))
    for image, index in zip(x, y, strict=True):
        expected = data.preprocess_eval(tf.constant(raw[index]), cfg).numpy()
        np.testing.assert_allclose(image, expected, atol=1e-6)


def test_augment_cifar_keeps_shape_and_changes_pixels():
    cfg = DataConfig(dataset="image_folder", image_size=8, augment="cifar")
    source, raw = _random_source()
    ds, _ = _one_epoch(source, cfg, 8)
    x, y = epoch_arrays(ds)
    assert x.shape == (8, 8, 8, 3)
    expected = np.stack(
        [data.preprocess_eval(tf.constant(raw[i]), cfg).numpy() for i in y]
    )
    assert not np.allclose(x, expected, atol=1e-3)
    # Padding zeros normalise to -1 under the default 0.5 / 0.5.
    assert x.min() >= -1.0 - 1e-6 and x.max() <= 1.0 + 1e-6


@pytest.mark.parametrize("augment", ["cifar", "none"])
def test_cutout_in_the_pipeline_zeroes_a_small_patch_per_image(augment):
    # Under the 0.5 / 0.5 normalisation no uint8 pixel (nor the padding)
    # maps to exactly 0, so exact zeros can only come from cutout, which
    # applies whatever the augmentation style.
    cfg = DataConfig(
        dataset="image_folder", image_size=8, cutout=3, augment=augment
    )
    source, _ = _random_source(shape=(8, 8, 3))
    ds, _ = _one_epoch(source, cfg, 8)
    x, _ = epoch_arrays(ds)
    zeroed = np.all(x == 0.0, axis=-1).sum(axis=(1, 2))
    assert np.all(zeroed >= 1) and np.all(zeroed <= 9)


def _expected_cutout_count(seed, size, length):
    centre = tf.random.stateless_uniform([2], seed) * size
    cy, cx = np.floor(centre.numpy()).astype(int)
    half = length // 2
    rows = min(size, cy + length - half) - max(0, cy - half)
    cols = min(size, cx + length - half) - max(0, cx - half)
    return rows * cols, (cy, cx)


@pytest.mark.parametrize("seed", [(0, 0), (1, 2), (3, 4), (5, 6), (7, 8)])
def test_cutout_zeroes_one_clipped_square(seed):
    size, length = 16, 4
    out = _cutout(tf.ones([size, size, 3]), length, seed).numpy()
    zero = out == 0.0
    # The same pixels in every channel, the rest untouched.
    assert np.array_equal(zero[..., 0], zero[..., 2])
    assert np.all(out[~zero] == 1.0)
    mask = zero[..., 0]
    count = int(mask.sum())
    assert 0 < count <= length * length
    # One axis-aligned rectangle: the outer product of its rows and columns.
    np.testing.assert_array_equal(
        mask, np.outer(mask.any(axis=1), mask.any(axis=0))
    )
    expected, (cy, cx) = _expected_cutout_count(seed, size, length)
    assert count == expected
    half = length // 2
    if half <= cy <= size - length + half and half <= cx <= size - length:
        assert count == length * length


def test_cutout_far_from_borders_is_exactly_length_squared():
    # Scan seeds for centres away from the borders; at least one must occur.
    size, length, hits = 32, 6, 0
    for s in range(20):
        _, (cy, cx) = _expected_cutout_count((s, 0), size, length)
        if length <= cy < size - length and length <= cx < size - length:
            out = _cutout(tf.ones([size, size, 1]), length, (s, 0))
            assert int((out.numpy() == 0).sum()) == length * length
            hits += 1
    assert hits > 0


# --- evaluation preprocessing -----------------------------------------------


def test_preprocess_eval_cifar_resizes():
    cfg = DataConfig(dataset="cifar10", image_size=8)
    image = tf.constant(np.full((12, 10, 3), 7, np.uint8))
    out = data.preprocess_eval(image, cfg)
    assert out.shape == (8, 8, 3) and out.dtype == tf.float32


def test_preprocess_eval_imagenet_resizes_and_crops():
    cfg = DataConfig(dataset="imagenet2012", image_size=8, augment="imagenet")
    image = tf.constant(np.zeros((30, 20, 3), np.uint8))
    assert data.preprocess_eval(image, cfg).shape == (8, 8, 3)


def test_preprocess_eval_imagenet_crops_the_centre_not_squash():
    # A tall image, dark at the top and bottom quarters: the centre crop of
    # the aspect-preserving resize sees only the bright middle.
    cfg = DataConfig(dataset="imagenet2012", image_size=8, augment="imagenet")
    image = np.zeros((64, 16, 3), np.uint8)
    image[16:48] = 255
    out = data.preprocess_eval(tf.constant(image), cfg).numpy()
    mean, std = data.normalisation("imagenet2012")
    expected = (1.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(out, np.broadcast_to(expected, out.shape))


@pytest.mark.parametrize(
    "dataset, augment",
    [
        ("cifar10", "auto"),
        ("digits", "auto"),
        ("imagenet2012", "auto"),
        ("image_folder", "none"),
    ],
)
def test_preprocess_eval_normalises_per_channel(dataset, augment):
    colour = np.array([10, 128, 250], np.uint8)
    image = np.broadcast_to(colour, (20, 14, 3)).copy()
    cfg = DataConfig(dataset=dataset, image_size=8, augment=augment)
    out = data.preprocess_eval(tf.constant(image), cfg).numpy()
    mean, std = data.normalisation(dataset)
    expected = (colour / 255.0 - np.array(mean)) / np.array(std)
    assert out.shape == (8, 8, 3)
    np.testing.assert_allclose(
        out, np.broadcast_to(expected, out.shape), rtol=1e-5, atol=1e-5
    )


def test_preprocess_eval_grayscale_becomes_rgb():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)
    cfg = DataConfig(dataset="image_folder", image_size=8)
    out = data.preprocess_eval(tf.constant(image), cfg).numpy()
    assert out.shape == (8, 8, 3)
    expected = (image[..., 0] / 255.0 - 0.5) / 0.5
    for c in range(3):
        np.testing.assert_allclose(out[..., c], expected, atol=1e-6)
