"""tf.data input pipelines for the search and the retraining.

Sources (`DataConfig.dataset`):
- `"digits"`: scikit-learn's bundled 8x8 digits (1,797 real images that ship
  inside the package), the embedded demo data, upsampled to `image_size`;
- `"image_folder"`: `tfds.folder_dataset.ImageFolder` over
  `data_dir/<split>/<label>/<image>`;
- any TFDS image-classification name (`"cifar10"`, `"imagenet2012"` with
  its manual download in `manual_dir`, ...).

Every pipeline yields `(images, labels)` batches of float32 RGB images,
normalised per data set, and int32 labels. Augmentation follows the reference
code: `"cifar"` pads, crops at random and flips (plus cutout when asked),
`"imagenet"` takes a random resized crop, flips and jitters colours; the
ImageNet evaluation resizes to `image_size / 0.875` and crops the centre.

The search validates on a share of the training split carved out by a
deterministic hash of the example index (SNAS.md §3), never on the test
split unless `eval_split` asks for it. The hash needs no split slicing, which
ImageFolder and `tfds.testing.mock_data` lack, and is the same on every
worker; carved pipelines are therefore sharded by data under
MultiWorkerMirroredStrategy, the others by file (`AUTO`).
"""

import dataclasses
import math
import os

import numpy as np
import tensorflow as tf

SOURCES = ("digits", "image_folder", "<any TFDS image-classification name>")
AUGMENTATIONS = ("auto", "cifar", "imagenet", "none")

# Per-channel mean and std of [0, 1] pixels; others use 0.5 / 0.5.
NORMALISATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # Measured on load_digits (pixels / 16).
    "digits": ((0.3063,) * 3, (0.3846,) * 3),
}
# The ImageNet evaluation resizes to 256 for a 224 crop.
CENTRE_CROP_FRACTION = 0.875
# Decoded images up to this many bytes per split are cached in memory.
CACHE_BYTES = 2 * 1024**3
# Shuffle buffer for pipelines too large to cache.
SHUFFLE_BUFFER = 10_000
# Knuth's multiplicative hash: consecutive indices spread evenly over
# [0, 2**32), so a fraction f of any index range lands below f * 2**32.
_HASH_MULTIPLIER = 2654435761


@dataclasses.dataclass(frozen=True)
class Pipelines:
    """Batched training and evaluation data.

    Attributes:
        train: dataset of (images, labels) batches, shuffled, augmented:
            `steps_per_epoch` full batches per epoch, the requested epochs
            back to back (give `fit` the `steps_per_epoch`).
        validation: dataset of (images, labels) batches, in a fixed order.
        num_classes: number of classes.
        input_shape: (H, W, 3) of one image.
        steps_per_epoch: training batches per epoch.
        train_examples: examples in the training pipeline.
        validation_examples: examples in the validation pipeline.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset
    num_classes: int
    input_shape: tuple
    steps_per_epoch: int
    train_examples: int
    validation_examples: int


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


def _load(cfg, split, seed):
    """The `_Source` of one split, capped at `cfg.max_examples`."""
    if cfg.dataset == "digits":
        source = _digits_source(split)
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


def normalisation(dataset: str):
    """(mean, std) of the data set's [0, 1] pixels, per channel."""
    return NORMALISATION.get(dataset, ((0.5,) * 3, (0.5,) * 3))


def _to_float_rgb(image):
    image = tf.image.convert_image_dtype(image, tf.float32)
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    return image


def _normalise(image, dataset):
    mean, std = normalisation(dataset)
    return (image - mean) / std


def augmentation_style(data_config) -> str:
    """The augmentation a config asks for, with `"auto"` resolved."""
    style = data_config.augment
    if style not in AUGMENTATIONS:
        raise ValueError(
            f"Unknown data.augment {style!r}. Valid choices: {AUGMENTATIONS}."
        )
    if style == "auto":
        style = "imagenet" if data_config.dataset == "imagenet2012" else "cifar"
    return style


def preprocess_eval(image, data_config):
    """Evaluation preprocessing of one uint8 image, in-graph.

    ImageNet style: resize the shorter side to `image_size / 0.875` and crop
    the centre; otherwise resize to `image_size`. Then normalise. The export's
    bytes signature uses this function, so served images see exactly what
    the evaluation saw.

    Args:
        image: uint8 tensor (H, W, 1 or 3).
        data_config: a `snas_tf.config.DataConfig`.

    Returns:
        float32 (image_size, image_size, 3).
    """
    size = data_config.image_size
    image = _to_float_rgb(image)
    if augmentation_style(data_config) == "imagenet":
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = (size / CENTRE_CROP_FRACTION) / tf.reduce_min(shape)
        resized = tf.cast(tf.round(shape * scale), tf.int32)
        image = tf.image.resize(image, resized)
        image = tf.image.resize_with_crop_or_pad(image, size, size)
    elif image.shape[0] != size or image.shape[1] != size:
        image = tf.image.resize(image, (size, size))
    return _normalise(image, data_config.dataset)


def _cutout(image, length, seed):
    """DARTS Cutout: zeroes a length x length square (clipped at borders)
    centred on a random pixel of the normalised image."""
    h, w = image.shape[0], image.shape[1]
    size = tf.constant([h, w], tf.float32)
    centre = tf.random.stateless_uniform([2], seed) * size
    centre = tf.cast(tf.floor(centre), tf.int32)
    ys = tf.range(h)[:, None]
    xs = tf.range(w)[None, :]
    half = length // 2
    inside = (
        (ys >= centre[0] - half)
        & (ys < centre[0] + length - half)
        & (xs >= centre[1] - half)
        & (xs < centre[1] + length - half)
    )
    return image * tf.cast(~inside, image.dtype)[..., None]


def _random_resized_crop(image, size, seed):
    """Inception crop: 8%-100% of the area, aspect 3/4-4/3, then resize."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        area_range=(0.08, 1.0),
        aspect_ratio_range=(3 / 4, 4 / 3),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    image = tf.slice(image, begin, crop_size)
    return tf.image.resize(image, (size, size))


def _augment_train(image, seed, data_config, style):
    """Training augmentation of one float [0, 1] RGB image; then normalised.

    Every random op is stateless, seeded from the element's seed, so the
    pipeline is deterministic for a given `runtime.seed` and identical on
    every worker.
    """
    size = data_config.image_size
    seeds = tf.random.experimental.stateless_split(seed, 6)
    flip = data_config.dataset != "digits"  # digits are not mirror-symmetric
    if style == "imagenet":
        image = _random_resized_crop(image, size, seeds[0])
        image = tf.image.stateless_random_flip_left_right(image, seeds[1])
        # torchvision ColorJitter(0.4, 0.4, 0.4, 0.2) as in the reference.
        # Brightness as torchvision: a factor in [0.6, 1.4].
        image *= tf.random.stateless_uniform([], seeds[2], 0.6, 1.4)
        image = tf.image.stateless_random_contrast(image, 0.6, 1.4, seeds[3])
        image = tf.image.stateless_random_saturation(image, 0.6, 1.4, seeds[4])
        image = tf.image.stateless_random_hue(image, 0.2, seeds[5])
        image = tf.clip_by_value(image, 0.0, 1.0)
    else:
        if image.shape[0] != size or image.shape[1] != size:
            image = tf.image.resize(image, (size, size))
        if style == "cifar":
            pad = max(1, size // 8)  # 4 pixels at 32x32, as the reference
            image = tf.image.pad_to_bounding_box(
                image, pad, pad, size + 2 * pad, size + 2 * pad
            )
            image = tf.image.stateless_random_crop(
                image, (size, size, 3), seeds[0]
            )
            if flip:
                image = tf.image.stateless_random_flip_left_right(
                    image, seeds[1]
                )
    image = _normalise(image, data_config.dataset)
    if data_config.cutout:
        image = _cutout(image, data_config.cutout, seeds[2])
    return image


def _options(carved: bool):
    options = tf.data.Options()
    options.deterministic = True
    # A carved split is defined by example indices, which only agree across
    # workers if every worker reads the whole split: shard by data then.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
        if carved
        else tf.data.experimental.AutoShardPolicy.AUTO
    )
    return options


def _fits_in_memory(source):
    if source.image_shape is None:
        return False
    return source.num_examples * math.prod(source.image_shape) <= CACHE_BYTES


def _train_pipeline(
    source, data_config, batch_size, seed, carved, epochs, initial_step=0
):
    """`epochs` = (first, stop) epochs of shuffled, augmented batches, the
    first `initial_step` batches of the first epoch skipped.

    Each epoch's order and augmentation come from stateless seeds derived
    from (seed, epoch, position). A stateful `reshuffle_each_iteration`
    shuffle would give a tf.distribute copy of the pipeline another order
    than the original (measured), so one-device and mirrored training, and
    a resumed run, would see different data.
    """
    style = augmentation_style(data_config)
    base = source.dataset
    cached = _fits_in_memory(source)
    if cached:
        base = base.cache()
    buffer = source.num_examples if cached else SHUFFLE_BUFFER
    steps = source.num_examples // batch_size
    if steps < 1:
        raise ValueError(
            f"Batch size {batch_size} is larger than the "
            f"{source.num_examples} training examples."
        )

    def one_epoch(epoch):
        # Traced into its own function graph: pin that graph's seed, so the
        # order depends on (seed, epoch) only, not on the process's global
        # seed (with a global seed of 0, TF's seed check also fails on a
        # tensor op seed).
        tf.random.set_seed(seed + 1)
        order_seed = tf.constant(seed, tf.int64) * 1_000_003 + epoch
        ds = base.shuffle(
            buffer, seed=order_seed, reshuffle_each_iteration=False
        )
        # Whole batches only, so that no batch straddles two epochs.
        ds = ds.take(steps * batch_size).enumerate()
        return ds.map(lambda i, example: (example, tf.stack([order_seed, i])))

    def prepare(example, element_seed):
        image, label = example
        if style == "none" and not data_config.cutout:
            image = preprocess_eval(image, data_config)
        else:
            image = _augment_train(
                _to_float_rgb(image), element_seed, data_config, style
            )
        return image, tf.cast(label, tf.int32)

    first, stop = epochs
    if not 0 <= initial_step < steps:
        raise ValueError(
            f"initial_step {initial_step!r} must be in [0, steps per epoch="
            f"{steps})."
        )
    # Skipped before the map: the skipped examples are never augmented.
    ds = (
        tf.data.Dataset.range(first, stop)
        .flat_map(one_epoch)
        .skip(initial_step * batch_size)
        .map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size, drop_remainder=True)
        .apply(
            tf.data.experimental.assert_cardinality(
                steps * (stop - first) - initial_step
            )
        )
        .prefetch(tf.data.AUTOTUNE)
        .with_options(_options(carved))
    )
    return ds, steps


def _eval_pipeline(source, data_config, batch_size, carved):
    def prepare(image, label):
        return preprocess_eval(image, data_config), tf.cast(label, tf.int32)

    ds = source.dataset
    if _fits_in_memory(source):
        ds = ds.cache()
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    batches = math.ceil(source.num_examples / batch_size)
    return (
        ds.batch(batch_size)
        .apply(tf.data.experimental.assert_cardinality(batches))
        .prefetch(tf.data.AUTOTUNE)
        .with_options(_options(carved))
    )


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


def make_pipelines(
    data_config,
    batch_size: int,
    seed: int = 0,
    carve: bool = True,
    epochs: int = 1,
    initial_epoch: int = 0,
    initial_step: int = 0,
) -> Pipelines:
    """Builds the training and validation pipelines of a job.

    Args:
        data_config: a `snas_tf.config.DataConfig`.
        batch_size: global batch size.
        seed: seed of the carved split, the shuffling and the augmentation.
        carve: validate on `validation_fraction` of the training split (the
            search; also the retraining on `digits`). Otherwise validate on
            `default_eval_split`. An explicit `eval_split` always wins.
        epochs: epochs the training pipeline holds, back to back (pass
            `steps_per_epoch` to `fit`); each has its own order.
        initial_epoch: first of them, and
        initial_step: batches of it to skip (a resumed run continues the
            data order of an uninterrupted one).

    Returns:
        A `Pipelines`.

    Raises:
        ValueError: for an unknown data set, split or augmentation, a
            missing manual download or image folder, an empty folder, a bad
            validation fraction or a batch larger than the data.
    """
    cfg = data_config
    if isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size!r}.")
    augmentation_style(cfg)  # fails early on a bad choice
    carved = carve and not cfg.eval_split
    if carved:
        train, val = _carve(_load(cfg, "train", seed), cfg.validation_fraction)
    else:
        train = _load(cfg, "train", seed)
        val = _load(cfg, default_eval_split(cfg), seed)
    if not 0 <= initial_epoch < epochs:
        raise ValueError(
            f"initial_epoch {initial_epoch!r} must be in [0, epochs="
            f"{epochs!r})."
        )
    train_ds, steps = _train_pipeline(
        train,
        cfg,
        batch_size,
        seed,
        carved,
        (initial_epoch, epochs),
        initial_step,
    )
    val_ds = _eval_pipeline(val, cfg, batch_size, carved)
    size = cfg.image_size
    return Pipelines(
        train=train_ds,
        validation=val_ds,
        num_classes=train.num_classes,
        input_shape=(size, size, 3),
        steps_per_epoch=steps,
        train_examples=train.num_examples,
        validation_examples=val.num_examples,
    )


def search_data(
    data_config, batch_size: int, seed: int = 0, epochs: int = 1, start=(0, 0)
) -> Pipelines:
    """The search's pipelines: validation carved from the training split.
    `start` = (initial_epoch, initial_step) of a resumed run."""
    return make_pipelines(data_config, batch_size, seed, True, epochs, *start)


def retrain_data(
    data_config, batch_size: int, seed: int = 0, epochs: int = 1, start=(0, 0)
) -> Pipelines:
    """The retraining's pipelines: validation on the held-out split
    (`digits`, which has none, carves it from the training split).
    `start` = (initial_epoch, initial_step) of a resumed run."""
    carve = data_config.dataset == "digits" and not data_config.eval_split
    return make_pipelines(data_config, batch_size, seed, carve, epochs, *start)
