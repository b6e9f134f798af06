"""Tests of the tf.data pipelines (snas_tf.data).

Nothing here may reach the network: TFDS data sets are mocked with
`tfds.testing.mock_data`, and the error paths must fail before any download.
"""

import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from snas_tf import data
from snas_tf.config import DataConfig

DIGITS = DataConfig(dataset="digits", image_size=8)
NUM_DIGITS = 1797
AUTO = tf.data.experimental.AutoShardPolicy.AUTO
DATA = tf.data.experimental.AutoShardPolicy.DATA


def _epoch(ds):
    """One pass over a batched dataset as (images, labels) numpy arrays."""
    images, labels = [], []
    for x, y in ds:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def _indexed_source(n, size=2):
    """A source whose label is the example index (images all zero)."""
    ds = tf.data.Dataset.range(n).map(
        lambda i: (tf.zeros([size, size, 1], tf.uint8), i)
    )
    return data._Source(ds, n, n, (size, size, 1))


def _random_source(n=8, shape=(12, 12, 3), seed=0):
    """A source of random uint8 images labelled by their index."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    ds = tf.data.Dataset.from_tensor_slices((images, np.arange(n)))
    return data._Source(ds, n, n, shape), images


def _one_epoch(source, cfg, batch_size):
    """The (uncarved) training pipeline of one epoch, and its steps."""
    return data._train_pipeline(source, cfg, batch_size, 0, False, (0, 1))


def _labels(ds):
    """The labels (here: indices) of an unbatched dataset, in one pull."""
    _, labels = next(iter(ds.batch(1_000_000)))
    return set(labels.numpy().tolist())


# --- digits: shapes, counts, the carved split -------------------------------


def test_digits_search_batches_and_counts():
    p = data.search_data(DIGITS, 64, seed=0)
    assert p.train_examples + p.validation_examples == NUM_DIGITS
    assert p.validation_examples / NUM_DIGITS == pytest.approx(0.1, abs=0.01)
    assert p.steps_per_epoch == p.train_examples // 64
    assert (p.num_classes, p.input_shape) == (10, (8, 8, 3))
    x, y = _epoch(p.train)
    assert len(y) == p.steps_per_epoch * 64
    assert x.shape[1:] == (8, 8, 3) and x.dtype == np.float32
    assert y.dtype == np.int32 and set(y) <= set(range(10))
    vx, vy = _epoch(p.validation)
    assert vx.shape == (p.validation_examples, 8, 8, 3)
    assert vy.dtype == np.int32


def test_digits_max_examples_caps_train_plus_validation():
    cfg = DataConfig(
        dataset="digits", image_size=8, max_examples=300, augment="none"
    )
    p = data.search_data(cfg, 16, seed=3)
    assert p.train_examples + p.validation_examples == 300
    assert p.steps_per_epoch == p.train_examples // 16
    assert len(list(p.train)) == p.steps_per_epoch
    assert sum(len(y) for _, y in p.validation) == p.validation_examples


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_carve_is_disjoint_and_covers_everything(fraction):
    n = 1000
    train, val = data._carve(_indexed_source(n), fraction)
    train_ids, val_ids = _labels(train.dataset), _labels(val.dataset)
    assert not train_ids & val_ids
    assert train_ids | val_ids == set(range(n))
    # The counts the pipelines are sized by match what the filters yield.
    assert (len(train_ids), len(val_ids)) == (
        train.num_examples,
        val.num_examples,
    )
    assert len(val_ids) / n == pytest.approx(fraction, abs=0.01)
    # The in-graph filter picks exactly the indices the sizes were counted
    # from (numpy), so `steps_per_epoch` matches what the pipeline yields.
    counted = data._hash_below(np.arange(n), fraction)
    assert val_ids == set(np.flatnonzero(counted).tolist())


def test_carve_is_the_same_for_every_run():
    # Index-only: searches with other seeds validate on the same examples.
    source = _indexed_source(500)
    val_a = _labels(data._carve(source, 0.2)[1].dataset)
    val_b = _labels(data._carve(source, 0.2)[1].dataset)
    assert val_a == val_b
    assert val_a != _labels(data._carve(source, 0.3)[1].dataset)


def test_carve_refuses_an_empty_split():
    with pytest.raises(ValueError, match="empty split"):
        data._carve(_indexed_source(1), 0.5)


# --- determinism ------------------------------------------------------------


def _small_digits(**overrides):
    kwargs = dict(dataset="digits", image_size=8, max_examples=120, cutout=4)
    kwargs.update(overrides)
    return DataConfig(**kwargs)


def test_same_seed_same_first_epoch_other_seed_differs():
    x1, y1 = _epoch(data.search_data(_small_digits(), 16, seed=1).train)
    x2, y2 = _epoch(data.search_data(_small_digits(), 16, seed=1).train)
    x3, _ = _epoch(data.search_data(_small_digits(), 16, seed=2).train)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert x1.shape != x3.shape or not np.array_equal(x1, x3)


def test_epochs_reshuffle_and_replay():
    # No augmentation, so epochs can differ only in order; batches of one
    # drop nothing, so every epoch holds every training example.
    cfg = _small_digits(augment="none", cutout=0)
    p = data.search_data(cfg, 1, seed=0, epochs=2)
    steps = p.steps_per_epoch
    assert steps == p.train_examples
    x, _ = _epoch(p.train)
    assert len(x) == 2 * steps
    first, second = x[:steps], x[steps:]
    assert not np.array_equal(first, second)
    assert sorted(im.tobytes() for im in first) == sorted(
        im.tobytes() for im in second
    )
    # Iterating again (a distributed copy, a second fit) replays the data.
    np.testing.assert_array_equal(_epoch(p.train)[0], x)


def test_resumed_pipeline_continues_the_data_order():
    cfg = _small_digits()
    whole = _epoch(data.make_pipelines(cfg, 16, seed=4, epochs=2).train)
    p = data.make_pipelines(cfg, 16, seed=4, epochs=2, initial_epoch=1)
    rest = _epoch(p.train)
    assert len(rest[1]) == p.steps_per_epoch * 16
    np.testing.assert_array_equal(rest[0], whole[0][len(rest[0]) :])
    np.testing.assert_array_equal(rest[1], whole[1][len(rest[1]) :])


def test_data_order_ignores_the_global_seed():
    try:
        tf.random.set_seed(0)
        x1, _ = _epoch(data.search_data(_small_digits(), 16, seed=1).train)
        tf.random.set_seed(123)
        x2, _ = _epoch(data.search_data(_small_digits(), 16, seed=1).train)
    finally:
        tf.random.set_seed(None)
    x3, _ = _epoch(data.search_data(_small_digits(), 16, seed=1).train)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(x1, x3)


@pytest.mark.parametrize("initial_epoch", [-1, 2])
def test_initial_epoch_out_of_range(initial_epoch):
    with pytest.raises(ValueError, match=f"initial_epoch {initial_epoch}"):
        data.make_pipelines(
            _small_digits(), 16, epochs=2, initial_epoch=initial_epoch
        )


# --- augmentation -----------------------------------------------------------


def test_augment_none_equals_eval_preprocessing():
    cfg = DataConfig(
        dataset="image_folder", image_size=8, augment="none", cutout=0
    )
    source, raw = _random_source()
    ds, steps = _one_epoch(source, cfg, 4)
    assert steps == 2
    x, y = _epoch(ds)
    assert sorted(y) == list(range(8))
    for image, index in zip(x, y, strict=True):
        expected = data.preprocess_eval(tf.constant(raw[index]), cfg).numpy()
        np.testing.assert_allclose(image, expected, atol=1e-6)


def test_augment_cifar_keeps_shape_and_changes_pixels():
    cfg = DataConfig(dataset="image_folder", image_size=8, augment="cifar")
    source, raw = _random_source()
    ds, _ = _one_epoch(source, cfg, 8)
    x, y = _epoch(ds)
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
    x, _ = _epoch(ds)
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
    out = data._cutout(tf.ones([size, size, 3]), length, seed).numpy()
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
            out = data._cutout(tf.ones([size, size, 1]), length, (s, 0))
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


# --- TFDS (mocked) ----------------------------------------------------------


def test_cifar10_retrain_validates_on_test_split(tmp_path):
    cfg = DataConfig(
        dataset="cifar10", data_dir=str(tmp_path), image_size=8, cutout=4
    )
    with tfds.testing.mock_data(num_examples=10):
        p = data.retrain_data(cfg, 4)
        x, y = _epoch(p.train)
        vx, _ = _epoch(p.validation)
    assert (p.train_examples, p.validation_examples) == (10, 10)
    assert p.steps_per_epoch == 2 and p.num_classes == 10
    assert x.shape == (8, 8, 8, 3) and y.dtype == np.int32
    assert vx.shape == (10, 8, 8, 3)
    assert p.train.options().experimental_distribute.auto_shard_policy == AUTO


def test_imagenet_search_uses_imagenet_preprocessing(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "ILSVRC2012_img_train.tar").write_bytes(b"x")
    cfg = DataConfig(
        dataset="imagenet2012",
        data_dir=str(tmp_path / "tfds"),
        manual_dir=str(manual),
        image_size=16,
    )
    assert data.augmentation_style(cfg) == "imagenet"
    with tfds.testing.mock_data(num_examples=12):
        p = data.search_data(cfg, 2)
        x, _ = _epoch(p.train)
        vx, vy = _epoch(p.validation)
    assert p.train_examples + p.validation_examples == 12
    assert p.num_classes == 1000
    assert x.shape == (p.steps_per_epoch * 2, 16, 16, 3)
    assert vx.shape == (p.validation_examples, 16, 16, 3)
    assert vy.dtype == np.int32
    assert np.isfinite(x).all() and np.isfinite(vx).all()


# --- image folder -----------------------------------------------------------


@pytest.fixture
def image_root(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for split, n in (("train", 3), ("test", 2)):
        for label in ("cat", "dog"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_image_folder_retrain(image_root):
    cfg = DataConfig(
        dataset="image_folder", data_dir=str(image_root), image_size=8
    )
    p = data.retrain_data(cfg, 2)
    assert p.num_classes == 2
    assert (p.train_examples, p.validation_examples) == (6, 4)
    assert p.steps_per_epoch == 3
    x, y = _epoch(p.train)
    vx, vy = _epoch(p.validation)
    assert x.shape == (6, 8, 8, 3) and sorted(y) == [0, 0, 0, 1, 1, 1]
    assert vx.shape == (4, 8, 8, 3) and sorted(vy) == [0, 0, 1, 1]
    for ds in (p.train, p.validation):
        assert ds.options().experimental_distribute.auto_shard_policy == AUTO


# --- tf.data options --------------------------------------------------------


def test_carved_pipelines_shard_by_data_others_auto():
    carved = data.search_data(_small_digits(), 16)
    held_out = data.search_data(_small_digits(eval_split="train"), 16)
    for ds in (carved.train, carved.validation):
        assert ds.options().experimental_distribute.auto_shard_policy == DATA
        assert ds.options().deterministic
    for ds in (held_out.train, held_out.validation):
        assert ds.options().experimental_distribute.auto_shard_policy == AUTO


# --- bad input --------------------------------------------------------------


@pytest.fixture
def no_download(monkeypatch):
    """Records (and refuses) any TFDS download attempt."""
    calls = []

    def refuse(self, *args, **kwargs):
        calls.append(self.name)
        raise RuntimeError("download attempted")

    monkeypatch.setattr(
        tfds.core.DatasetBuilder, "download_and_prepare", refuse
    )
    return calls


def test_unknown_dataset(tmp_path, no_download):
    cfg = DataConfig(dataset="no_such_dataset", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="'no_such_dataset'"):
        data.search_data(cfg, 2)
    assert no_download == []


def test_imagenet_without_manual_dir_fails_before_download(
    tmp_path, no_download
):
    cfg = DataConfig(dataset="imagenet2012", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="manual_dir None"):
        data.search_data(cfg, 2)
    assert no_download == []


def test_imagenet_with_empty_manual_dir(tmp_path, no_download):
    empty = tmp_path / "manual"
    empty.mkdir()
    cfg = DataConfig(
        dataset="imagenet2012",
        data_dir=str(tmp_path / "tfds"),
        manual_dir=str(empty),
    )
    with pytest.raises(ValueError, match=re.escape(repr(str(empty)))):
        data.search_data(cfg, 2)
    assert no_download == []


def test_image_folder_missing(tmp_path):
    missing = str(tmp_path / "missing")
    cfg = DataConfig(dataset="image_folder", data_dir=missing)
    with pytest.raises(ValueError, match=re.escape(repr(missing))):
        data.retrain_data(cfg, 2)


def test_image_folder_without_images(tmp_path):
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            (tmp_path / split / label).mkdir(parents=True)
    cfg = DataConfig(dataset="image_folder", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="holds no images"):
        data.retrain_data(cfg, 2)


def test_image_folder_unknown_eval_split(image_root):
    cfg = DataConfig(
        dataset="image_folder", data_dir=str(image_root), eval_split="tst"
    )
    with pytest.raises(ValueError, match=r"'tst'.*\['test', 'train'\]"):
        data.retrain_data(cfg, 2)


@pytest.mark.parametrize(
    "overrides, batch, message",
    [
        (dict(augment="fancy"), 8, "'fancy'"),
        (dict(max_examples=20), 64, "Batch size 64"),
        (dict(validation_fraction=0.0), 8, r"got 0\.0"),
        (dict(validation_fraction=1.5), 8, r"got 1\.5"),
        (dict(eval_split="test"), 8, "'test' for 'digits'"),
        ({}, 0, "got 0"),
    ],
)
def test_bad_digits_input(overrides, batch, message):
    cfg = DataConfig(dataset="digits", image_size=8, **overrides)
    with pytest.raises(ValueError, match=message):
        data.search_data(cfg, batch)
