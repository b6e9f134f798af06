"""Quantisation-aware fine-tuning (TFMOT) to a full-int8 TFLite file.

TFMOT quantises only Keras 2 models, so the fine-tuning runs on the child
network's `tf_keras` twin (`build_child_network(...,
layers=tf_keras.layers)`: same layer names), with the Keras 3 model's
weights copied by layer name. `import tensorflow_model_optimization` sets
`TF_USE_LEGACY_KERAS=1` for the rest of its process
(docs/tensorflow-notes.md §7), after
which `tf.keras` means Keras 2; so `quantization_aware_int8` runs all of it
in a child process (`python -m snas_tf.export.qat_worker`) and the
caller's process never imports TFMOT.

The worker builds the twin, sets the weights and checks its logits against
the Keras 3 model's; splits every BatchNormalization that follows a
Concatenate into one per branch (`split_concat_batch_norms`: TFMOT's
`quantize_model` rejects the FactorizedReduce's concat -> BN); optionally
prunes by magnitude (`prune_low_magnitude`, fine-tune, `strip_pruning`,
then a sparsity-preserving quantisation scheme); wraps the model for QAT
with TFMOT's default 8-bit scheme, annotating the BN after every pool
(SNAS App. G.1), which that scheme's registry also rejects, to quantise
its output only; fine-tunes it on the given images and labels; and
converts it with int8 weights, activations, input and output.

Reference:
    Jacob et al., "Quantization and Training of Neural Networks for
    Efficient Integer-Arithmetic-Only Inference", CVPR 2018 (the scheme
    TFMOT's default 8-bit QAT simulates).
"""

import copy
import json
import numbers
import os
import subprocess
import sys
import tempfile

import numpy as np

from snas_tf.genotype import get_genotype
from snas_tf.models.child_network import inference_model

# The build arguments the worker passes on to `build_child_network`.
CHILD_KWARGS = (
    "network",
    "num_classes",
    "channels",
    "num_layers",
    "image_size",
)
# Lines of the worker's stderr quoted in a RuntimeError.
_STDERR_LINES = 25
# Images whose logits the worker checks the twin against.
_CHECK_IMAGES = 8
_WORKER = "snas_tf.export.qat_worker"


def _concat_widths(model) -> dict:
    """Concatenate layers joining on the channel axis, called once: name ->
    the channel count of each input, in order."""
    widths = {}
    for layer in model.layers:
        if type(layer).__name__ != "Concatenate":
            continue
        if len(layer.inbound_nodes) != 1:
            continue
        if layer.axis not in (-1, len(layer.output.shape) - 1):
            continue
        widths[layer.name] = [int(t.shape[-1]) for t in layer.input]
    return widths


def _splittable(layer_config, widths) -> bool:
    """A BatchNormalization called once, on the channel axis, on the one
    output of a Concatenate in `widths`."""
    if layer_config["class_name"] != "BatchNormalization":
        return False
    nodes = layer_config["inbound_nodes"]
    if len(nodes) != 1 or len(nodes[0]) != 1 or nodes[0][0][0] not in widths:
        return False
    axis = layer_config["config"]["axis"]
    axis = axis if isinstance(axis, list) else [axis]
    return axis in ([-1], [3])


def _consumers(config) -> dict:
    """Layer name -> names of the layers (None: the outputs) reading it."""
    readers = {}
    for layer in config["layers"]:
        for node in layer["inbound_nodes"]:
            for ref in node:
                readers.setdefault(ref[0], set()).add(layer["name"])
    for ref in config["output_layers"]:
        readers.setdefault(ref[0], set()).add(None)
    return readers


def _rename_refs(refs, old, new):
    """`refs`: a node's inbound references, or `output_layers`."""
    return [[new, *r[1:]] if r[0] == old else r for r in refs]


def _branch_layers(bn_config, concat_config, keep_concat_name):
    """The branch BNs replacing `bn_config`, and the concat joining them."""
    bn = bn_config["name"]
    branches = []
    for i, ref in enumerate(concat_config["inbound_nodes"][0]):
        branch = copy.deepcopy(bn_config)
        branch["name"] = branch["config"]["name"] = f"{bn}_branch{i}"
        branch["inbound_nodes"] = [[ref]]
        # Built on its input when called; the old shape has all channels.
        branch.pop("build_config", None)
        branches.append(branch)
    merged = copy.deepcopy(concat_config)
    if not keep_concat_name:
        merged["name"] = merged["config"]["name"] = f"{bn}_concat"
    merged["inbound_nodes"] = [[[b["name"], 0, 0, {}] for b in branches]]
    return branches, merged


def _split_config(config, widths):
    """The functional config with every splittable BN split per branch.

    Returns:
        (config, splits): `splits` maps each split BN's name to its
        concat's name and the names of its branch BNs, in channel order.
    """
    readers = _consumers(config)
    by_name = {layer["name"]: layer for layer in config["layers"]}
    # BN name -> concat name.
    to_split = {
        c["name"]: c["inbound_nodes"][0][0][0]
        for c in config["layers"]
        if _splittable(c, widths)
    }
    # A concat read by its BN only moves behind the branch BNs, keeping its
    # name; otherwise it stays, and a new concat replaces the BN.
    moved = {c for bn, c in to_split.items() if readers[c] == {bn}}
    layers, splits, renames = [], {}, {}
    for layer in config["layers"]:
        name = layer["name"]
        if name in moved:
            continue
        if name not in to_split:
            layers.append(copy.deepcopy(layer))
            continue
        concat = to_split[name]
        branches, merged = _branch_layers(
            layer, by_name[concat], concat in moved
        )
        layers += [*branches, merged]
        splits[name] = (concat, [b["name"] for b in branches])
        renames[name] = merged["name"]
    config = dict(config, layers=layers)
    for old, new in renames.items():
        for layer in layers:
            layer["inbound_nodes"] = [
                _rename_refs(node, old, new) for node in layer["inbound_nodes"]
            ]
        config["output_layers"] = _rename_refs(
            config["output_layers"], old, new
        )
    return config, splits


def split_concat_batch_norms(model):
    """Splits every BatchNormalization after a Concatenate per branch.

    BN normalises each channel on its own, so `BN(concat([a, b]))` equals
    `concat([BN_a(a), BN_b(b)])` with BN_a, BN_b holding the channel
    slices of the parameters and moving statistics: exact, in training too
    (batch statistics are per channel as well). TFMOT's `quantize_model`
    rejects a BN after a Concatenate (the FactorizedReduce's); it takes
    the split form. No TFMOT import here: this runs in any process.

    Only a BN and a Concatenate that are each called once and work on the
    channel axis of a 4-D (NHWC) tensor are split.

    Args:
        model: a `tf_keras` functional model (e.g. the child network's
            twin). It is not changed.

    Returns:
        A new `tf_keras` functional model with the same weights. A split BN
        `x` becomes `x_branch0`, `x_branch1`, ... and the concat, moved
        behind them, keeps its name (or, when something else also reads
        the unnormalised concatenation, a new concat `x_concat` is added);
        every other layer keeps its name. `model` itself is returned when
        nothing needs splitting.

    Raises:
        TypeError: if `model` is not a tf_keras model (Keras 3 functional
            configs have another layout; TFMOT needs tf_keras anyway).
    """
    if not type(model).__module__.startswith("tf_keras."):
        raise TypeError(
            f"split_concat_batch_norms takes a tf_keras model, got "
            f"{type(model).__module__}.{type(model).__name__}; build the "
            "twin with build_child_network(..., layers=tf_keras.layers)."
        )
    widths = _concat_widths(model)
    config, splits = _split_config(model.get_config(), widths)
    if not splits:
        return model
    split = type(model).from_config(config)
    branch_of = {
        branch: (bn, i)
        for bn, (_, branches) in splits.items()
        for i, branch in enumerate(branches)
    }
    for layer in split.layers:
        if not layer.weights:
            continue
        if layer.name not in branch_of:
            layer.set_weights(model.get_layer(layer.name).get_weights())
            continue
        bn, i = branch_of[layer.name]
        channels = widths[splits[bn][0]]
        start = sum(channels[:i])
        layer.set_weights(
            [
                w[..., start : start + channels[i]]
                for w in model.get_layer(bn).get_weights()
            ]
        )
    return split


def _save_weights(model, path) -> None:
    """`np.savez` of `"<layer>:<i>" -> weight`, for the worker to set by
    layer name (a Keras 3 `.weights.h5` does not load into tf_keras)."""
    arrays = {}
    for layer in model.layers:
        for i, value in enumerate(layer.get_weights()):
            arrays[f"{layer.name}:{i}"] = value
    np.savez(path, **arrays)


def _check_child_kwargs(child_kwargs):
    unknown = sorted(set(child_kwargs) - set(CHILD_KWARGS))
    if unknown:
        raise ValueError(
            f"Unknown child_kwargs {unknown}. Expected some of "
            f"{CHILD_KWARGS}; the twin is always built with auxiliary=False."
        )


def _check_data(images, labels, image_shape):
    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.shape[1:] != image_shape:
        raise ValueError(
            f"images have shape {images.shape}; the model takes (N, "
            f"{', '.join(map(str, image_shape))})."
        )
    if labels.shape != (len(images),) or len(images) == 0:
        raise ValueError(
            f"labels must be N={len(images)} integer class ids (N > 0), got "
            f"shape {labels.shape}."
        )
    return images, labels.astype(np.int32)


def _check_settings(epochs, batch_size, calibration_images, prune, sparsity):
    # epochs >= 1: the fake-quant ranges are learned while fine-tuning;
    # converted untrained, they give garbage.
    for name, value in (
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("calibration_images", calibration_images),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Integral)
            or value < 1
        ):
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    if prune and not 0 < sparsity < 1:
        raise ValueError(f"sparsity must be in (0, 1), got {sparsity!r}.")


def _write_inputs(tmp, model, images, labels) -> dict:
    """Weights and data for the worker; returns their spec entries."""
    paths = {
        "weights": os.path.join(tmp, "weights.npz"),
        "data": os.path.join(tmp, "data.npz"),
        "metadata_path": os.path.join(tmp, "metadata.json"),
    }
    _save_weights(model, paths["weights"])
    check = images[:_CHECK_IMAGES]
    np.savez(
        paths["data"],
        images=images,
        labels=labels,
        check_images=check,
        check_logits=np.asarray(model(check, training=False), np.float32),
    )
    return paths


def _run_worker(spec_path, timeout):
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        result = subprocess.run(
            [sys.executable, "-m", _WORKER, spec_path],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(
            f"Quantisation-aware training did not finish in {timeout} s."
        ) from e
    if result.returncode != 0:
        tail = "\n".join(result.stderr.splitlines()[-_STDERR_LINES:])
        raise RuntimeError(
            f"Quantisation-aware training failed (exit code "
            f"{result.returncode}). Last lines of its stderr:\n{tail}"
        )


def quantization_aware_int8(
    model,
    genotype,
    child_kwargs: dict,
    images,
    labels,
    out_path,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 1e-4,
    freeze_batch_norm: bool = True,
    prune: bool = False,
    sparsity: float = 0.5,
    calibration_images: int = 100,
    seed: int = 0,
    timeout: float | None = None,
) -> dict:
    """QAT-fine-tunes a child network and writes a full-int8 `.tflite`.

    Everything TFMOT runs in a child process (see the module docstring);
    this process only saves the weights and data and reads the metadata.

    Args:
        model: the Keras 3 child network (any build of `genotype` and
            `child_kwargs`; its auxiliary head, if any, is left out).
        genotype: what `build_child_network` takes: a `Genotype`, a
            `GENOTYPES` name, JSON, a compact string or a JSON path.
        child_kwargs: the other `build_child_network` arguments the model
            was built with, among `CHILD_KWARGS`.
        images: float32 `(N, H, W, 3)` fine-tuning images, preprocessed as
            the model was trained (their first `calibration_images` also
            calibrate the int8 input / output conversion).
        labels: int class ids `(N,)`.
        out_path: the `.tflite` file to write (written whole or not at all).
        epochs: fine-tuning epochs over `images` (and as many again for
            the pruning, with `prune`).
        batch_size: fine-tuning batch size.
        learning_rate: Adam learning rate; small, since QAT starts from the
            trained weights.
        freeze_batch_norm: run the BNs in inference mode, fixed: the
            fine-tuning then trains the graph that is exported, and small
            batches cannot shift a trained network's moving statistics.
        prune: first prune the Conv2D kernels by magnitude to `sparsity`
            and fine-tune, then QAT with a sparsity-preserving scheme.
        sparsity: target fraction of zeros in each pruned kernel.
        calibration_images: images for the converter's representative set.
        seed: seed of the twin's fine-tuning.
        timeout: seconds before the worker is killed (None: no limit).

    Returns:
        The worker's metadata: `path`, `bytes`, `steps`, `losses` (per
        epoch), `final_loss`, `twin_max_abs_diff` and `split_max_abs_diff`
        (tf_keras twin before / after the BN split vs. the Keras 3 logits
        on up to 8 images), `split_batch_norms` (BNs added by the split),
        `qat_top1_agreement` (fake-quantised model vs. Keras 3 on those
        images), `conv_sparsity`, `prune_losses` (with `prune`), `seconds`.

    Raises:
        ValueError: for unknown child_kwargs, ill-shaped images / labels,
            a non-positive epochs / batch_size / calibration_images, or,
            with `prune`, a sparsity outside (0, 1).
        RuntimeError: when the worker fails (with its last stderr lines),
            including when the twin's logits differ from the model's.
    """
    _check_child_kwargs(child_kwargs)
    _check_settings(epochs, batch_size, calibration_images, prune, sparsity)
    model = inference_model(model)
    images, labels = _check_data(
        images, labels, tuple(model.inputs[0].shape[1:])
    )
    out_path = os.path.abspath(os.fspath(out_path))
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="snas-qat-") as tmp:
        spec = {
            "genotype": get_genotype(genotype).to_json(),
            "child_kwargs": dict(child_kwargs),
            "out_path": out_path,
            "epochs": int(epochs),
            "batch_size": int(batch_size),
            "learning_rate": float(learning_rate),
            "freeze_batch_norm": bool(freeze_batch_norm),
            "prune": bool(prune),
            "sparsity": float(sparsity),
            "calibration_images": int(calibration_images),
            "seed": int(seed),
            **_write_inputs(tmp, model, images, labels),
        }
        spec_path = os.path.join(tmp, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        _run_worker(spec_path, timeout)
        with open(spec["metadata_path"]) as f:
            return json.load(f)


__all__ = [
    "CHILD_KWARGS",
    "quantization_aware_int8",
    "split_concat_batch_norms",
]
