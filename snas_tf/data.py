"""tf.data pipelines for the search.

Data sets: scikit-learn's bundled 8x8 `digits` (real images that ship inside
the package, the embedded demo data) and any TFDS image-classification data
set such as `cifar10`. The search validates on a split carved from the
training data (SNAS.md §3 decision), never on the test split.
"""

import dataclasses

import numpy as np
import tensorflow as tf

# Per-channel normalisation of CIFAR-10 (as the reference code).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclasses.dataclass(frozen=True)
class SearchData:
    """Batched training and validation data for a search.

    Attributes:
        train: dataset of (images, labels) batches.
        validation: dataset of (images, labels) batches.
        num_classes: number of classes.
        input_shape: (H, W, channels) of one image.
        steps_per_epoch: training batches per epoch.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset
    num_classes: int
    input_shape: tuple
    steps_per_epoch: int


def _split(n, fraction, seed):
    if not 0.0 < fraction < 1.0:
        raise ValueError(
            f"validation_fraction must be in (0, 1), got {fraction!r}."
        )
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * fraction)))
    return order[n_val:], order[:n_val]


def _digits_arrays():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype("float32")[..., None]
    return images, digits.target.astype("int32"), 10


def _tfds_arrays(name, data_dir):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # tfds raises many types for unknown names
        raise ValueError(
            f"Unknown dataset {name!r}: {e}. Use 'digits' or a TFDS "
            "image-classification name such as 'cifar10'."
        ) from e
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train", as_supervised=True)
    images, labels = [], []
    for image, label in ds.as_numpy_iterator():
        images.append(image)
        labels.append(label)
    num_classes = builder.info.features["label"].num_classes
    images = np.stack(images).astype("float32") / 255.0
    return images, np.asarray(labels, "int32"), num_classes


def _normalise(images, dataset):
    if dataset == "cifar10":
        mean, std = np.array(CIFAR10_MEAN), np.array(CIFAR10_STD)
    else:
        mean = images.mean(axis=(0, 1, 2))
        std = images.std(axis=(0, 1, 2)) + 1e-6
    return ((images - mean) / std).astype("float32")


def search_data(data_config, batch_size: int, seed: int = 0) -> SearchData:
    """Builds the search's training and validation pipelines.

    Args:
        data_config: a `snas_tf.config.DataConfig`.
        batch_size: global batch size.
        seed: seed of the split and of the shuffling order.

    Returns:
        A `SearchData`.

    Raises:
        ValueError: for an unknown data set or a bad split fraction.
    """
    cfg = data_config
    if cfg.dataset == "digits":
        images, labels, num_classes = _digits_arrays()
    else:
        images, labels, num_classes = _tfds_arrays(cfg.dataset, cfg.data_dir)
    if cfg.max_examples:
        images, labels = images[: cfg.max_examples], labels[: cfg.max_examples]
    images = _normalise(images, cfg.dataset)
    size = cfg.image_size
    if images.shape[1:3] != (size, size):
        images = tf.image.resize(images, (size, size)).numpy()
    train_idx, val_idx = _split(len(images), cfg.validation_fraction, seed)
    flip = cfg.dataset != "digits"

    def augment(image, label):
        padded = tf.image.pad_to_bounding_box(image, 4, 4, size + 8, size + 8)
        image = tf.image.random_crop(padded, tf.shape(image))
        if flip:
            image = tf.image.random_flip_left_right(image)
        return image, label

    train = tf.data.Dataset.from_tensor_slices(
        (images[train_idx], labels[train_idx])
    ).shuffle(len(train_idx), seed=seed, reshuffle_each_iteration=True)
    if cfg.augment:
        train = train.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    train = train.batch(batch_size, drop_remainder=True).prefetch(
        tf.data.AUTOTUNE
    )
    validation = (
        tf.data.Dataset.from_tensor_slices((images[val_idx], labels[val_idx]))
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    steps = len(train_idx) // batch_size
    if steps < 1:
        raise ValueError(
            f"batch_size {batch_size} is larger than the {len(train_idx)} "
            "training examples."
        )
    return SearchData(
        train, validation, num_classes, tuple(images.shape[1:]), steps
    )
