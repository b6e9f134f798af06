"""`snas summary`: size and cost of a genotype's child network.

Parameters follow the paper's convention: trainable parameters, BatchNorm
scale/offset included, the auxiliary head excluded (also reported with it).
Multiply-adds are per image, convolutions and dense layers of the inference
graph.
"""

from snas_tf.genotype import get_genotype
from snas_tf.models import (
    build_child_network,
    count_parameters,
    inference_model,
    multiply_adds,
)

# (layers, channels, classes, image size) of the paper's retrain settings.
DEFAULTS = {"cifar": (20, 36, 10, 32), "imagenet": (14, 48, 1000, 224)}


def summarize(
    genotype,
    network="cifar",
    layers=None,
    channels=None,
    classes=None,
    image_size=None,
) -> dict:
    """Parameters and multiply-adds of a genotype's child network.

    Args:
        genotype: a `Genotype`, registry name, JSON string/file or compact
            string.
        network: "cifar" or "imagenet".
        layers, channels, classes, image_size: default to the paper's
            retrain setting of `network` (CIFAR 20/36/10 at 32, ImageNet
            14/48/1000 at 224).

    Returns:
        A dict with the settings, `params`, `params_with_auxiliary` and
        `multiply_adds`.

    Raises:
        ValueError: for an unknown network or genotype, or bad sizes.
    """
    if network not in DEFAULTS:
        raise ValueError(
            f"Unknown network {network!r}. Expected one of {tuple(DEFAULTS)}."
        )
    genotype = get_genotype(genotype)
    d_layers, d_channels, d_classes, d_size = DEFAULTS[network]
    layers = layers or d_layers
    channels = channels or d_channels
    classes = classes or d_classes
    image_size = image_size or d_size
    model = build_child_network(
        genotype,
        network=network,
        num_classes=classes,
        channels=channels,
        num_layers=layers,
        image_size=image_size,
        auxiliary=True,
    )
    return {
        "genotype": genotype.to_string(),
        "network": network,
        "layers": layers,
        "channels": channels,
        "classes": classes,
        "image_size": image_size,
        "params": count_parameters(model, exclude_auxiliary=True),
        "params_with_auxiliary": count_parameters(
            model, exclude_auxiliary=False
        ),
        "multiply_adds": multiply_adds(inference_model(model)),
    }
