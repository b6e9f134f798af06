"""The batched training and evaluation pipelines of a job.

Every pipeline yields `(images, labels)` batches of float32 RGB images,
normalised per data set (`snas_tf.data.preprocessing`), and int32 labels,
read from a source of `snas_tf.data.sources`. The search's validation
split is carved from the training split; the retraining's is the held-out
split. A bi-level DARTS search (`arch_fraction`) also carves an
architecture split, and its training batches pair a batch of each:
`((x_train, x_arch), (y_train, y_arch))`.
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
from snas_tf.data.sources import (
    _carve,
    _carve_arch,
    _load,
    default_eval_split,
)

# Decoded images up to this many bytes per split are cached in memory.
CACHE_BYTES = 2 * 1024**3
# Shuffle buffer for pipelines too large to cache.
SHUFFLE_BUFFER = 10_000
# Added to the order seed of the architecture split's pipeline, so that its
# order and augmentation are a stream of their own (the training split's
# order seeds, seed * 1_000_003 + epoch, stay far below it).
_ARCH_STREAM = 2**62


@dataclasses.dataclass(frozen=True)
class Pipelines:
    """Batched training and evaluation data.

    Attributes:
        train: dataset of (images, labels) batches, shuffled, augmented:
            `steps_per_epoch` full batches per epoch, the requested epochs
            back to back (give `fit` the `steps_per_epoch`). With an
            architecture split: `((x_train, x_arch), (y_train, y_arch))`
            batches, one of each split per step.
        validation: dataset of (images, labels) batches, in a fixed order.
        num_classes: number of classes.
        input_shape: (H, W, 3) of one image.
        steps_per_epoch: training batches per epoch.
        train_examples: examples in the training pipeline.
        validation_examples: examples in the validation pipeline.
        arch_examples: examples of the architecture split (0: none).
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset
    num_classes: int
    input_shape: tuple
    steps_per_epoch: int
    train_examples: int
    validation_examples: int
    arch_examples: int = 0


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


def _epochs_of(source, batch_size, seed, steps, stream=0):
    """`one_epoch(epoch)`: the `steps * batch_size` examples of an epoch of
    `source` in their shuffled order, each with its augmentation seed.

    Each epoch's order and augmentation come from stateless seeds derived
    from (seed, epoch, position); `stream` offsets the order seed of a
    second pipeline of the same job. A stateful `reshuffle_each_iteration`
    shuffle would give a tf.distribute copy of the pipeline another order
    than the original (measured), so one-device and mirrored training, and
    a resumed run, would see different data.
    """
    base = source.dataset
    cached = _fits_in_memory(source)
    if cached:
        base = base.cache()
    buffer = source.num_examples if cached else SHUFFLE_BUFFER

    def one_epoch(epoch):
        # Traced into its own function graph: pin that graph's seed, so the
        # order depends on (seed, epoch) only, not on the process's global
        # seed (with a global seed of 0, TF's seed check also fails on a
        # tensor op seed).
        tf.random.set_seed(seed + 1)
        order_seed = tf.constant(seed, tf.int64) * 1_000_003 + epoch
        if stream:
            order_seed += stream
        ds = base.shuffle(
            buffer, seed=order_seed, reshuffle_each_iteration=False
        )
        # Whole batches only, so that no batch straddles two epochs.
        ds = ds.take(steps * batch_size).enumerate()
        return ds.map(lambda i, example: (example, tf.stack([order_seed, i])))

    return one_epoch


def _preparer(data_config):
    """`prepare(example, element_seed)`: a training example augmented."""
    style = augmentation_style(data_config)

    def prepare(example, element_seed):
        image, label = example
        if style == "none" and not data_config.cutout:
            image = preprocess_eval(image, data_config)
        else:
            image = _augment_train(
                _to_float_rgb(image), element_seed, data_config, style
            )
        return image, tf.cast(label, tf.int32)

    return prepare


def _steps(sources, batch_size, initial_step):
    """Full batches per epoch of the smallest of `sources`."""
    smallest = min(s.num_examples for s in sources)
    steps = smallest // batch_size
    if steps < 1:
        raise ValueError(
            f"Batch size {batch_size} is larger than the "
            f"{smallest} training examples."
        )
    if not 0 <= initial_step < steps:
        raise ValueError(
            f"initial_step {initial_step!r} must be in [0, steps per epoch="
            f"{steps})."
        )
    return steps


def _train_pipeline(
    source, data_config, batch_size, seed, carved, epochs, initial_step=0
):
    """`epochs` = (first, stop) epochs of shuffled, augmented batches, the
    first `initial_step` batches of the first epoch skipped (the order:
    `_epochs_of`)."""
    steps = _steps([source], batch_size, initial_step)
    one_epoch = _epochs_of(source, batch_size, seed, steps)
    prepare = _preparer(data_config)
    first, stop = epochs
    # Skipped before the map: the skipped examples are never augmented.
    ds = (
        tf.data.Dataset.range(first, stop)
        .flat_map(one_epoch)
        .skip(initial_step * batch_size)
        .map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch_size, drop_remainder=True)
    )
    batches = steps * (stop - first) - initial_step
    return _finish_train(ds, batches, carved), steps


def _finish_train(ds, num_batches, carved):
    """`ds` of training batches declared `num_batches` long, prefetched,
    with the options of its split."""
    return (
        ds.apply(tf.data.experimental.assert_cardinality(num_batches))
        .prefetch(tf.data.AUTOTUNE)
        .with_options(_options(carved))
    )


def _paired_train_pipeline(
    train, arch, data_config, batch_size, seed, carved, epochs, initial_step
):
    """As `_train_pipeline`, with each batch of `train` paired with one of
    `arch` (the architecture split, in an order of its own):
    `((x_train, x_arch), (y_train, y_arch))`. An epoch is as many steps as
    the smaller split has full batches."""
    steps = _steps([train, arch], batch_size, initial_step)
    train_epoch = _epochs_of(train, batch_size, seed, steps)
    arch_epoch = _epochs_of(arch, batch_size, seed, steps, _ARCH_STREAM)
    prepare = _preparer(data_config)
    first, stop = epochs
    ds = (
        tf.data.Dataset.range(first, stop)
        .flat_map(lambda e: tf.data.Dataset.zip(train_epoch(e), arch_epoch(e)))
        .skip(initial_step * batch_size)
        .map(
            lambda t, a: (prepare(*t), prepare(*a)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .batch(batch_size, drop_remainder=True)
        .map(lambda t, a: ((t[0], a[0]), (t[1], a[1])))
    )
    batches = steps * (stop - first) - initial_step
    return _finish_train(ds, batches, carved), steps


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
    arch_fraction: float | None = None,
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
        arch_fraction: carve this share of the training examples (those
            outside the validation share) as the architecture split of a
            bi-level DARTS search; `train` then pairs its batches with the
            architecture split's (None: no architecture split).

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
    arch = None
    if arch_fraction is not None:
        train, arch, val = _carve_arch(
            _load(cfg, "train", seed),
            cfg.validation_fraction if carved else None,
            arch_fraction,
        )
        if not carved:
            val = _load(cfg, default_eval_split(cfg), seed)
    elif carved:
        train, val = _carve(_load(cfg, "train", seed), cfg.validation_fraction)
    else:
        train = _load(cfg, "train", seed)
        val = _load(cfg, default_eval_split(cfg), seed)
    if not 0 <= initial_epoch < epochs:
        raise ValueError(
            f"initial_epoch {initial_epoch!r} must be in [0, epochs="
            f"{epochs!r})."
        )
    if arch is None:
        train_ds, steps = _train_pipeline(
            train,
            cfg,
            batch_size,
            seed,
            carved,
            (initial_epoch, epochs),
            initial_step,
        )
    else:
        # Carved by index: shard by data under multi-worker, as the
        # validation carve.
        train_ds, steps = _paired_train_pipeline(
            train,
            arch,
            cfg,
            batch_size,
            seed,
            True,
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
        arch_examples=arch.num_examples if arch is not None else 0,
    )


def search_data(
    data_config,
    batch_size: int,
    seed: int = 0,
    epochs: int = 1,
    start=(0, 0),
    arch_fraction: float | None = None,
) -> Pipelines:
    """The search's pipelines: validation carved from the training split.
    `start` = (initial_epoch, initial_step) of a resumed run;
    `arch_fraction`: the architecture split of a bi-level DARTS search
    (`make_pipelines`)."""
    return make_pipelines(
        data_config,
        batch_size,
        seed,
        True,
        epochs,
        *start,
        arch_fraction=arch_fraction,
    )


def retrain_data(
    data_config, batch_size: int, seed: int = 0, epochs: int = 1, start=(0, 0)
) -> Pipelines:
    """The retraining's pipelines: validation on the held-out split
    (`digits`, which has none, carves it from the training split).
    `start` = (initial_epoch, initial_step) of a resumed run."""
    carve = data_config.dataset == "digits" and not data_config.eval_split
    return make_pipelines(data_config, batch_size, seed, carve, epochs, *start)
