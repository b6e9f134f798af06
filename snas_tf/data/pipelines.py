"""The batched training and evaluation pipelines of a job.

Every pipeline yields `(images, labels)` batches of float32 RGB images,
normalised per data set (`snas_tf.data.preprocessing`), and int32 labels,
read from a source of `snas_tf.data.sources`. The search's validation
split is carved from the training split; the retraining's is the held-out
split.
"""

import dataclasses
import math

import tensorflow as tf

from snas_tf.data.preprocessing import (
    _augment_train,
    _to_float_rgb,
    augmentation_style,
    preprocess_eval,
)
from snas_tf.data.sources import _carve, _load, default_eval_split

# Decoded images up to this many bytes per split are cached in memory.
CACHE_BYTES = 2 * 1024**3
# Shuffle buffer for pipelines too large to cache.
SHUFFLE_BUFFER = 10_000


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
