"""Per-image preprocessing: normalisation, augmentation, evaluation crops.

Augmentation follows the reference code: `"cifar"` pads, crops at random
and flips (plus cutout when asked), `"imagenet"` takes a random resized
crop, flips and jitters colours; the ImageNet evaluation resizes to
`image_size / 0.875` and crops the centre. Every random op is stateless,
so a pipeline's augmentation depends on its seeds only.
"""

import tensorflow as tf

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
