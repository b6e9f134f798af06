"""Tests of the data sources (snas_tf.data.sources): the carved split,
TFDS (mocked), image folders and bad data sets.

Nothing here may reach the network: TFDS data sets are mocked with
`tfds.testing.mock_data`, and the error paths must fail before any download.
"""

import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from image_bombs import jpeg_declaring, png_declaring
from PIL import Image
from pipeline_testing import epoch_arrays

from snas_tf import data
from snas_tf.config import DataConfig
from snas_tf.data.sources import _carve, _carve_arch, _hash_below, _Source

AUTO = tf.data.experimental.AutoShardPolicy.AUTO


def _indexed_source(n, size=2):
    """A source whose label is the example index (images all zero)."""
    ds = tf.data.Dataset.range(n).map(
        lambda i: (tf.zeros([size, size, 1], tf.uint8), i)
    )
    return _Source(ds, n, n, (size, size, 1))


def _labels(ds):
    """The labels (here: indices) of an unbatched dataset, in one pull."""
    _, labels = next(iter(ds.batch(1_000_000)))
    return set(labels.numpy().tolist())


# --- the carved split -------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_carve_is_disjoint_and_covers_everything(fraction):
    n = 1000
    train, val = _carve(_indexed_source(n), fraction)
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
    counted = _hash_below(np.arange(n), fraction)
    assert val_ids == set(np.flatnonzero(counted).tolist())


def test_carve_is_the_same_for_every_run():
    # Index-only: searches with other seeds validate on the same examples.
    source = _indexed_source(500)
    val_a = _labels(_carve(source, 0.2)[1].dataset)
    val_b = _labels(_carve(source, 0.2)[1].dataset)
    assert val_a == val_b
    assert val_a != _labels(_carve(source, 0.3)[1].dataset)


def test_carve_refuses_an_empty_split():
    with pytest.raises(ValueError, match="empty split"):
        _carve(_indexed_source(1), 0.5)


# --- the architecture split of bi-level DARTS -------------------------------


@pytest.mark.parametrize("validation, arch", [(0.1, 0.5), (0.3, 0.2)])
def test_arch_carve_is_disjoint_from_train_and_validation(validation, arch):
    n = 1000
    source = _indexed_source(n)
    train, arch_part, val = _carve_arch(source, validation, arch)
    ids = [_labels(p.dataset) for p in (train, arch_part, val)]
    train_ids, arch_ids, val_ids = ids
    assert not train_ids & arch_ids
    assert not arch_ids & val_ids and not train_ids & val_ids
    assert train_ids | arch_ids | val_ids == set(range(n))
    assert [len(i) for i in ids] == [
        p.num_examples for p in (train, arch_part, val)
    ]
    # The validation share is a SNAS search's; the architecture share is
    # `arch` of the rest, and the same in every run.
    assert val_ids == _labels(_carve(source, validation)[1].dataset)
    assert len(arch_ids) / (n - len(val_ids)) == pytest.approx(arch, abs=0.01)
    assert arch_ids == _labels(_carve_arch(source, validation, arch)[1].dataset)


def test_arch_carve_without_validation_share_and_bad_fractions():
    source = _indexed_source(200)
    train, arch, val = _carve_arch(source, None, 0.5)
    assert val is None
    train_ids, arch_ids = _labels(train.dataset), _labels(arch.dataset)
    assert not train_ids & arch_ids
    assert train_ids | arch_ids == set(range(200))
    for bad in (0.0, 1.0):
        with pytest.raises(
            ValueError, match=r"search.arch_fraction .*\(0, 1\)"
        ):
            _carve_arch(source, 0.1, bad)
    with pytest.raises(ValueError, match="empty architecture split"):
        _carve_arch(_indexed_source(2), 0.1, 0.01)


# --- TFDS (mocked) ----------------------------------------------------------


def test_cifar10_retrain_validates_on_test_split(tmp_path):
    cfg = DataConfig(
        dataset="cifar10", data_dir=str(tmp_path), image_size=8, cutout=4
    )
    with tfds.testing.mock_data(num_examples=10):
        p = data.retrain_data(cfg, 4)
        x, y = epoch_arrays(p.train)
        vx, _ = epoch_arrays(p.validation)
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
        x, _ = epoch_arrays(p.train)
        vx, vy = epoch_arrays(p.validation)
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
    x, y = epoch_arrays(p.train)
    vx, vy = epoch_arrays(p.validation)
    assert x.shape == (6, 8, 8, 3) and sorted(y) == [0, 0, 0, 1, 1, 1]
    assert vx.shape == (4, 8, 8, 3) and sorted(vy) == [0, 0, 1, 1]
    for ds in (p.train, p.validation):
        assert ds.options().experimental_distribute.auto_shard_policy == AUTO


def _bombs(root):
    """An oversize PNG and JPEG (headers declaring 20000x20000; a few
    hundred bytes each, which would fail to decode) in train/."""
    png = root / "train" / "cat" / "huge.png"
    png.write_bytes(png_declaring(20000, 20000))
    jpeg = root / "train" / "dog" / "huge.jpg"
    jpeg.write_bytes(jpeg_declaring(20000, 20000))
    return png, jpeg


def test_image_folder_refuses_an_oversize_header_by_path(image_root):
    _bombs(image_root)
    cfg = DataConfig(
        dataset="image_folder", data_dir=str(image_root), image_size=8
    )
    with pytest.raises(
        ValueError,
        match=r"/train/(cat/huge.png is a PNG|dog/huge.jpg is a JPEG) of "
        r"20000x20000 pixels, over data.max_image_pixels=16777216",
    ):
        data.retrain_data(cfg, 2)


def test_image_folder_skips_oversize_files_never_decoding_them(image_root):
    _bombs(image_root)
    cfg = DataConfig(
        dataset="image_folder",
        data_dir=str(image_root),
        image_size=8,
        oversize_images="skip",
    )
    with pytest.warns(UserWarning, match=r"Skipped 2 image\(s\) of split "):
        p = data.retrain_data(cfg, 2)
    assert (p.train_examples, p.validation_examples) == (6, 4)
    x, y = epoch_arrays(p.train)  # a decoded bomb would fail here
    assert x.shape == (6, 8, 8, 3) and sorted(y) == [0, 0, 0, 1, 1, 1]


def test_image_folder_pixel_limit_is_inclusive(image_root):
    """The train images are 12 wide and 10, 11, 12 high: a limit of 12x11
    keeps two of each label."""
    cfg = DataConfig(
        dataset="image_folder",
        data_dir=str(image_root),
        image_size=8,
        max_image_pixels=12 * 11,
        oversize_images="skip",
    )
    with pytest.warns(UserWarning, match=r"Skipped 2 image\(s\) of split "):
        p = data.retrain_data(cfg, 2)
    assert (p.train_examples, p.validation_examples) == (4, 4)


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
