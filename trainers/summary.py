"""`snas summary`: size and cost of a genotype's child network.

Parameters follow the paper's convention: trainable parameters, BatchNorm
scale/offset included, the auxiliary head excluded (also reported with it).
Multiply-adds are per image, convolutions and dense layers of the inference
graph.
"""

from snas_tf.genotype import get_genotype
from snas_tf.latency.cost import predict_latency
from snas_tf.latency.table import check_table, load_table
from snas_tf.latency.target import TargetNetwork
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
    latency_table=None,
    auxiliary=True,
) -> dict:
    """Parameters and multiply-adds of a genotype's child network.

    Args:
        genotype: a `Genotype`, registry name, JSON string/file or compact
            string.
        network: "cifar" or "imagenet".
        layers, channels, classes, image_size: default to the paper's
            retrain setting of `network` (CIFAR 20/36/10 at 32, ImageNet
            14/48/1000 at 224), or with `latency_table` to its target's.
        latency_table: optional path of a latency table: the child's
            latency is predicted from it (`snas_tf.latency.cost`), no
            export needed.
        auxiliary: count the auxiliary head too (`params_with_auxiliary`;
            None when False). A table's target too small for the head
            leaves it out.

    Returns:
        A dict with the settings, `params`, `params_with_auxiliary` and
        `multiply_adds`; with a table also `latency` (`predict_latency`:
        `total_us` and its parts) and `latency_runtime` (how the table was
        timed).

    Raises:
        ValueError: for an unknown network or genotype, bad sizes, or a
            table that does not fit the network (naming the size).
    """
    if latency_table is not None:
        return _with_latency(
            genotype,
            latency_table,
            network=network,
            layers=layers,
            channels=channels,
            classes=classes,
            image_size=image_size,
        )
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
        auxiliary=auxiliary,
    )
    return {
        "genotype": genotype.to_string(),
        "network": network,
        "layers": layers,
        "channels": channels,
        "classes": classes,
        "image_size": image_size,
        "params": count_parameters(model, exclude_auxiliary=True),
        "params_with_auxiliary": (
            count_parameters(model, exclude_auxiliary=False)
            if auxiliary
            else None
        ),
        "multiply_adds": multiply_adds(inference_model(model)),
    }


# `summarize` argument -> the table's target key.
_TARGET_KEYS = {
    "network": "network",
    "layers": "num_layers",
    "channels": "channels",
    "classes": "num_classes",
    "image_size": "image_size",
}


def _with_latency(genotype, path, **sizes) -> dict:
    """`summarize` at the table's target size, plus the prediction."""
    table = load_table(path)
    known = {f for f in TargetNetwork.__dataclass_fields__}
    try:
        target = TargetNetwork(
            **{k: v for k, v in table.target.items() if k in known}
        )
    except TypeError as e:
        raise ValueError(
            f"Latency table {str(path)!r}: incomplete target {table.target}."
        ) from e
    check_table(table, target)
    for arg, key in _TARGET_KEYS.items():
        value = sizes[arg]
        # `network` has a default; only a value other than the table's is
        # a conflict for the others.
        if arg == "network" and value == "cifar":
            continue
        if value is not None and value != getattr(target, key):
            raise ValueError(
                f"--{arg.replace('_', '-')} {value!r} differs from the "
                f"latency table's target ({key} {getattr(target, key)!r})."
            )
    args = (
        genotype,
        target.network,
        target.num_layers,
        target.channels,
        target.num_classes,
        target.image_size,
    )
    try:
        result = summarize(*args)
    except ValueError:
        # A small target has no room for the auxiliary head (a bad
        # genotype fails again below, with its own message).
        result = summarize(*args, auxiliary=False)
    result["latency"] = predict_latency(table, target, genotype)
    result["latency_runtime"] = table.runtime
    return result
