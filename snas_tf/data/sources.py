"""Where the images come from: digits, TFDS builders, image folders.

Sources (`DataConfig.dataset`):
- `"digits"`: scikit-learn's bundled 8x8 digits (1,797 real images that ship
  inside the package), the embedded demo data, upsampled to `image_size`;
- `"image_folder"`: `tfds.folder_dataset.ImageFolder`'s files and labels
  over `data_dir/<split>/<label>/<image>`, each file's header checked
  before it is ever decoded (`data.max_image_pixels`,
  `data.oversize_images`; `snas_tf.image_headers`);
- any TFDS image-classification name (`"cifar10"`, `"imagenet2012"` with
  its manual download in `manual_dir`, ...).

The search validates on a share of the training split carved out by a
deterministic hash of the example index (docs/method.md §3), never on the test
split unless `eval_split` asks for it. The hash needs no split slicing, which
ImageFolder and `tfds.testing.mock_data` lack, and is the same on every
worker; carved pipelines are therefore sharded by data under
MultiWorkerMirroredStrategy, the others by file (`AUTO`).
"""

import dataclasses
import os
import warnings

import numpy as np
import tensorflow as tf

from snas_tf.image_headers import file_dimensions

SOURCES = ("digits", "image_folder", "<any TFDS image-classification name>")
# Knuth's multiplicative hash: consecutive indices spread evenly over
# [0, 2**32), so a fraction f of any index range lands below f * 2**32.
_HASH_MULTIPLIER = 2654435761


@dataclasses.dataclass(frozen=True)
class _Source:
    """One split of a data set, before any preprocessing."""

    dataset: tf.data.Dataset  # (uint8 image (H, W, C), int label)
    num_examples: int
    num_classes: int
    image_shape: tuple  # static (H, W, C); None for variable sizes


def _unknown_dataset(name, cause=""):
    return ValueError(
        f"Unknown dataset {name!r}{cause}. Valid choices: 'digits', "
        "'image_folder' (with data_dir), or a TFDS image-classification "
        "name such as 'cifar10' or 'imagenet2012'."
    )


DIGITS_CLASSES = 10


def num_classes(data_config) -> int:
    """Classes of the data set, from its metadata only (no download).

    Raises:
        ValueError: for an unknown data set or a missing or empty image
            folder.
    """
    if data_config.dataset == "digits":
        return DIGITS_CLASSES
    return _builder(data_config).info.features["label"].num_classes


def _digits_source(split):
    if split != "train":
        raise ValueError(
            f"Unknown split {split!r} for 'digits'. Valid splits: ['train'] "
            "(validation is carved from it)."
        )
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype("uint8")
    images = images[..., None]
    labels = digits.target.astype("int64")
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    return _Source(ds, len(labels), DIGITS_CLASSES, images.shape[1:])


def _builder(cfg):
    """The TFDS builder of `cfg.dataset`, checked but not prepared."""
    import tensorflow_datasets as tfds

    if cfg.dataset == "image_folder":
        root = cfg.data_dir and os.path.expanduser(cfg.data_dir)
        if not root or not os.path.isdir(root):
            raise ValueError(
                f"data.data_dir {root!r} is not a directory; 'image_folder' "
                "needs data_dir/<split>/<label>/<image files>."
            )
        builder = tfds.folder_dataset.ImageFolder(root)
        if not builder.info.splits or not any(
            (s.num_examples or 0) > 0 for s in builder.info.splits.values()
        ):
            raise ValueError(
                f"Image folder {root!r} holds no images; expected "
                "data_dir/<split>/<label>/<image files>."
            )
        return builder
    try:
        data_dir = cfg.data_dir and os.path.expanduser(cfg.data_dir)
        builder = tfds.builder(cfg.dataset, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise _unknown_dataset(cfg.dataset) from e
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise _unknown_dataset(
            cfg.dataset, " (it has no 'image' and 'label' features)"
        )
    return builder


def _tfds_builder(cfg):
    """The builder of `cfg.dataset`, prepared (downloaded) if need be."""
    import tensorflow_datasets as tfds

    builder = _builder(cfg)
    if cfg.dataset != "image_folder" and not builder.is_prepared():
        kwargs = {}
        if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
            manual = cfg.manual_dir and os.path.expanduser(cfg.manual_dir)
            if (
                not manual
                or not os.path.isdir(manual)
                or not os.listdir(manual)
            ):
                raise ValueError(
                    f"Dataset {cfg.dataset!r} needs a manual download: "
                    f"data.manual_dir {manual!r} is not a non-empty "
                    "directory. "
                    + " ".join(builder.MANUAL_DOWNLOAD_INSTRUCTIONS.split())
                )
            kwargs["download_config"] = tfds.download.DownloadConfig(
                manual_dir=manual
            )
        try:
            builder.download_and_prepare(**kwargs)
        except Exception as e:  # network, disk and extraction errors
            raise ValueError(
                f"Could not prepare dataset {cfg.dataset!r} in "
                f"{builder.data_dir!r}: {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''} Without a "
                "network, prepare it on another machine and set "
                "data.data_dir to a copy of its TFDS data directory."
            ) from e
    return builder


def _tfds_source(builder, split, seed):
    import tensorflow_datasets as tfds

    splits = builder.info.splits
    # Under tfds.testing.mock_data the split info is empty.
    if splits and split not in splits:
        raise ValueError(
            f"Unknown split {split!r} of {builder.name!r}. Valid splits: "
            f"{sorted(splits)}."
        )
    ds = builder.as_dataset(
        split=split,
        as_supervised=True,
        shuffle_files=False,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )
    num = splits[split].num_examples if splits else None
    if not num:
        num = int(ds.reduce(0, lambda n, _: n + 1))
    shape = builder.info.features["image"].shape
    static = None if None in shape else tuple(shape)
    num_classes = builder.info.features["label"].num_classes
    return _Source(ds, num, num_classes, static)


def _within_limit(examples, cfg, split):
    """The examples whose file header declares at most
    `cfg.max_image_pixels` pixels (up to `cfg.max_examples` of them: the
    files after are not read).

    Raises:
        ValueError: naming the first oversize file, with
            `oversize_images` "fail"; or when every file is oversize.
    """
    limit, kept, skipped = cfg.max_image_pixels, [], []
    for example in examples:
        if cfg.max_examples and len(kept) == cfg.max_examples:
            break
        header = file_dimensions(example.image_path)
        if header is None or header[1] * header[2] <= limit:
            kept.append(example)  # unreadable headers: the decoder reports
            continue
        kind, width, height = header
        if cfg.oversize_images == "fail":
            raise ValueError(
                f"{example.image_path} is a {kind} of {width}x{height} "
                f"pixels, over data.max_image_pixels={limit}; not decoded. "
                "Set data.oversize_images=skip to leave such files out, or "
                "raise data.max_image_pixels."
            )
        skipped.append(example.image_path)
    if skipped:
        warnings.warn(
            f"Skipped {len(skipped)} image(s) of split {split!r} over "
            f"data.max_image_pixels={limit} (first: {skipped[0]}).",
            stacklevel=2,
        )
    if not kept:
        raise ValueError(
            f"Every image of split {split!r} is over data.max_image_pixels"
            f"={limit} (first: {skipped[0]})."
        )
    return kept


def _image_folder_source(builder, split, cfg):
    """One split of an image folder: the files and labels of TFDS's
    `ImageFolder` (in its order), their headers checked, then read and
    decoded as its `as_dataset` does."""
    examples = builder._split_examples  # split -> [(image_path, label)]
    if split not in examples:
        raise ValueError(
            f"Unknown split {split!r} of image folder {builder.data_dir!r}. "
            f"Valid splits: {sorted(examples)}."
        )
    kept = _within_limit(examples[split], cfg, split)
    features = builder.info.features
    paths = [e.image_path for e in kept]
    labels = [features["label"].str2int(e.label) for e in kept]

    def decode(path, label):
        example = features.decode_example(
            {
                "image": tf.io.read_file(path),
                "label": tf.cast(label, tf.int64),
                "image/filename": path,
            }
        )
        return example["image"], example["label"]

    ds = tf.data.Dataset.from_tensor_slices((paths, labels)).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE
    )
    return _Source(
        ds, len(kept), features["label"].num_classes, image_shape=None
    )


def _load(cfg, split, seed):
    """The `_Source` of one split, capped at `cfg.max_examples`."""
    if cfg.dataset == "digits":
        source = _digits_source(split)
    elif cfg.dataset == "image_folder":
        source = _image_folder_source(_builder(cfg), split, cfg)
    else:
        source = _tfds_source(_tfds_builder(cfg), split, seed)
    if cfg.max_examples and cfg.max_examples < source.num_examples:
        source = dataclasses.replace(
            source,
            dataset=source.dataset.take(cfg.max_examples),
            num_examples=cfg.max_examples,
        )
    return source


def _hash_below(index, fraction):
    """Whether `index` falls in the carved share `fraction` (tf or numpy).

    The split depends on the index only, not on the run's seed: searches
    with different seeds validate on the same examples.
    """
    threshold = int(fraction * 2**32)
    if isinstance(index, np.ndarray):
        return (index * _HASH_MULTIPLIER) % 2**32 < threshold
    index = tf.cast(index, tf.int64)
    return (index * _HASH_MULTIPLIER) % 2**32 < threshold


def _carve(source, fraction):
    """Splits a source into (train, validation) by the index hash."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(
            f"data.validation_fraction must be in (0, 1), got {fraction!r}."
        )
    in_val = _hash_below(np.arange(source.num_examples), fraction)
    n_val = int(in_val.sum())
    if n_val == 0 or n_val == source.num_examples:
        raise ValueError(
            f"validation_fraction {fraction} of {source.num_examples} "
            "examples leaves an empty split."
        )
    indexed = source.dataset.enumerate()

    def part(keep_val):
        ds = indexed.filter(
            lambda i, _: tf.equal(_hash_below(i, fraction), keep_val)
        ).map(lambda _, example: example)
        return ds

    train = dataclasses.replace(
        source, dataset=part(False), num_examples=source.num_examples - n_val
    )
    val = dataclasses.replace(source, dataset=part(True), num_examples=n_val)
    return train, val


def _carve_arch(source, validation_fraction, arch_fraction):
    """Splits a source into (train, arch, validation) by the index hash.

    Bi-level DARTS trains α on examples that θ never sees: `arch_fraction`
    of the examples outside the validation share. The validation share is
    `_carve`'s (the same examples as a SNAS search); the architecture share
    is the next hash range, [v, v + a (1 - v)) of [0, 1), so the three
    parts are disjoint by construction and depend on the index only.
    `validation_fraction` None (the validation is another split) carves
    no validation part and returns None for it.
    """
    if not 0.0 < arch_fraction < 1.0:
        raise ValueError(
            f"search.arch_fraction must be in (0, 1), got {arch_fraction!r}."
        )
    if validation_fraction is None:
        low = 0
    else:
        if not 0.0 < validation_fraction < 1.0:
            raise ValueError(
                "data.validation_fraction must be in (0, 1), got "
                f"{validation_fraction!r}."
            )
        low = int(validation_fraction * 2**32)
    high = low + int(arch_fraction * (2**32 - low))
    hashes = (np.arange(source.num_examples) * _HASH_MULTIPLIER) % 2**32
    counts = [
        int((hashes < low).sum()),
        int(((hashes >= low) & (hashes < high)).sum()),
        int((hashes >= high).sum()),
    ]
    names = ["validation", "architecture", "training"]
    if validation_fraction is None:
        counts, names = counts[1:], names[1:]
    if min(counts) == 0:
        raise ValueError(
            f"search.arch_fraction {arch_fraction} of {source.num_examples} "
            f"examples leaves an empty {names[counts.index(0)]} split."
        )
    indexed = source.dataset.enumerate()

    def part(lo, hi):
        def keep(i, _):
            h = (tf.cast(i, tf.int64) * _HASH_MULTIPLIER) % 2**32
            return tf.logical_and(h >= lo, h < hi)

        return indexed.filter(keep).map(lambda _, example: example)

    arch = dataclasses.replace(
        source, dataset=part(low, high), num_examples=counts[-2]
    )
    train = dataclasses.replace(
        source, dataset=part(high, 2**32), num_examples=counts[-1]
    )
    val = None
    if validation_fraction is not None:
        # `_carve`'s own filter, so a SNAS search validates on the same.
        val = _carve(source, validation_fraction)[1]
    return train, arch, val


def is_available(data_config) -> bool:
    """Whether the data set can be read here without a download."""
    cfg = data_config
    if cfg.dataset == "digits":
        return True
    if cfg.dataset == "image_folder":
        return bool(cfg.data_dir) and os.path.isdir(
            os.path.expanduser(cfg.data_dir)
        )
    import tensorflow_datasets as tfds

    data_dir = cfg.data_dir and os.path.expanduser(cfg.data_dir)
    try:
        return tfds.builder(cfg.dataset, data_dir=data_dir).is_prepared()
    except Exception:  # unknown names and unreadable directories
        return False


def default_eval_split(data_config) -> str:
    """The held-out split of the retraining: `eval_split`, else the data
    set's `test` split, else its `validation` split."""
    if data_config.eval_split:
        return data_config.eval_split
    if data_config.dataset == "digits":
        raise ValueError(
            "'digits' has only a train split; set data.eval_split to null "
            "and the retraining evaluates on validation_fraction of it."
        )
    if data_config.dataset == "imagenet2012":
        return "validation"
    return "test"
