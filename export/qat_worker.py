"""Child process of `snas_tf.export.qat.quantization_aware_int8`.

`python -m snas_tf.export.qat_worker SPEC.json` runs TFMOT quantisation-
aware fine-tuning on the tf_keras twin and writes an int8 `.tflite` file
and a metadata JSON, both named in the spec. It imports
`tensorflow_model_optimization`, which turns `tf.keras` into Keras 2 for
the whole process: never import this module from a Keras 3 process.

Spec keys (written by `quantization_aware_int8`): `genotype` (JSON),
`child_kwargs`, `weights` (npz, `"<layer>:<i>"` -> array), `data` (npz:
`images`, `labels`, `check_images`, `check_logits`), `out_path`,
`metadata_path`, `epochs`, `batch_size`, `learning_rate`,
`freeze_batch_norm`, `prune`, `sparsity`, `calibration_images`, `seed`.
"""

import json
import math
import os
import sys
import tempfile
import time

# Before TensorFlow is imported: TFMOT sets it on import anyway
# (docs/tensorflow-notes.md §7); setting it first keeps `tf.keras` one
# thing all along.
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402

from snas_tf.export.qat import split_concat_batch_norms  # noqa: E402
from snas_tf.export.tflite import write_frozen_saved_model  # noqa: E402
from snas_tf.models.child_network import build_child_network  # noqa: E402

# Up to this many fine-tuning steps, Grappler's graph optimisation costs
# more than it saves: it lengthens the first step, which dominates a short
# fine-tuning (docs/tensorflow-notes.md §4).
_FEW_STEPS = 50
# The twin must reproduce the Keras 3 logits up to float rounding.
_TWIN_TOLERANCE = 1e-4
_quantize_keras = tfmot.quantization.keras


def _load_weights(model, path):
    """Sets every layer's weights from the npz the parent wrote."""
    with np.load(path) as arrays:
        for layer in model.layers:
            if not layer.weights:
                continue
            keys = [f"{layer.name}:{i}" for i in range(len(layer.weights))]
            missing = [k for k in keys if k not in arrays]
            if missing:
                raise ValueError(
                    f"Layer {layer.name!r} of the tf_keras twin has no saved "
                    f"weights {missing}: was the Keras 3 model built with "
                    "the same genotype and child_kwargs?"
                )
            layer.set_weights([arrays[k] for k in keys])


def _checked_diff(name, model, images, logits) -> float:
    """Max |model(images) - logits|; raises if beyond float rounding."""
    diff = float(np.max(np.abs(model(images, training=False) - logits)))
    scale = max(1.0, float(np.max(np.abs(logits))))
    if diff > _TWIN_TOLERANCE * scale:
        raise RuntimeError(
            f"{name} differs from the Keras 3 model by {diff:.3g} (logits "
            f"up to {scale:.3g}; tolerance {_TWIN_TOLERANCE} relative)."
        )
    return diff


def _freeze_batch_norms(model) -> None:
    """Inference-mode BNs: the fine-tuning then trains the graph that is
    exported, and a few small batches cannot shift the moving statistics
    of a trained network (the usual late-QAT BN freeze)."""
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            layer.trainable = False


def _fine_tune(model, spec, data, callback=None):
    """Adam fine-tuning on the spec's data; returns the per-epoch losses.

    A plain loop over one step traced without AutoGraph rather than `fit`,
    whose AutoGraph and train-function tracing dominate a few steps. A
    `callback` (TFMOT's `UpdatePruningStep`) is driven as TFMOT's guide to
    custom training loops does.
    """
    optimizer = tf_keras.optimizers.Adam(spec["learning_rate"])
    loss_fn = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = model.trainable_variables
    # Slots made here, not on the first traced call (which would trace
    # twice to lift them out).
    optimizer.build(variables)
    images, labels = data["images"], data["labels"]

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, *images.shape[1:]), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        ],
        autograph=False,
    )
    @tf.autograph.experimental.do_not_convert
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply_gradients(
            zip(tape.gradient(loss, variables), variables, strict=True)
        )
        return loss

    rng = np.random.default_rng(spec["seed"])
    batch = spec["batch_size"]
    if callback is not None:
        callback.set_model(model)
        callback.on_train_begin()
    losses = []
    for _ in range(spec["epochs"]):
        order = rng.permutation(len(labels))
        total = 0.0
        for begin in range(0, len(order), batch):
            index = order[begin : begin + batch]
            if callback is not None:
                callback.on_train_batch_begin(batch=-1)
            total += float(step(images[index], labels[index])) * len(index)
        if callback is not None:
            callback.on_epoch_end(batch=-1)
        losses.append(total / len(labels))
    return losses


def _is_conv2d(layer) -> bool:
    # tf_keras' DepthwiseConv2D is no Conv2D subclass; stated for clarity.
    return isinstance(layer, tf_keras.layers.Conv2D) and not isinstance(
        layer, tf_keras.layers.DepthwiseConv2D
    )


def _prune(model, spec, data):
    """Magnitude pruning of the Conv2D kernels, fine-tuned, stripped.

    The classifier (tiny and the most sensitive) and the depthwise kernels
    (which `prune_low_magnitude` does not prune, docs/tensorflow-notes.md
    §7) stay dense.
    """
    schedule = tfmot.sparsity.keras.ConstantSparsity(
        spec["sparsity"], begin_step=0, frequency=1
    )

    def wrap(layer):
        if _is_conv2d(layer):
            return tfmot.sparsity.keras.prune_low_magnitude(
                layer, pruning_schedule=schedule
            )
        return layer

    pruned = tf_keras.models.clone_model(model, clone_function=wrap)
    losses = _fine_tune(
        pruned, spec, data, tfmot.sparsity.keras.UpdatePruningStep()
    )
    return tfmot.sparsity.keras.strip_pruning(pruned), losses


def _conv_sparsity(model) -> float:
    """Fraction of zeros over the Conv2D kernels (QAT-wrapped or not)."""
    kernels = [
        w.numpy()
        for w in model.weights
        if w.name.endswith("/kernel:0") and len(w.shape) == 4
    ]
    zeros = sum(int(np.sum(k == 0)) for k in kernels)
    return zeros / max(1, sum(k.size for k in kernels))


class _OutputQuantizeConfig(_quantize_keras.QuantizeConfig):
    """Quantises a layer's output only, as TFMOT's internal
    `Default8BitOutputQuantizeConfig` does for a BN after a convolution."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [
            _quantize_keras.quantizers.MovingAverageQuantizer(
                num_bits=8, per_axis=False, symmetric=False, narrow_range=False
            )
        ]

    def get_config(self):
        return {}


def _standalone_batch_norm(layer) -> bool:
    """A BN that TFMOT's conv + BN transforms do not cover, which the
    default 8-bit registry rejects: the SNAS BN after every pool (SNAS
    App. G.1)."""
    if not isinstance(layer, tf_keras.layers.BatchNormalization):
        return False
    source = layer.inbound_nodes[0].inbound_layers
    return not isinstance(
        source, tf_keras.layers.Conv2D | tf_keras.layers.DepthwiseConv2D
    )


# Layer calls while cloning need no AutoGraph (no tensor-dependent Python
# control flow); converting every wrapper's `call` took about a third of
# `quantize_apply`.
@tf.autograph.experimental.do_not_convert
def _quantize(model, prune):
    """`quantize_model`, plus an output-only config for standalone BNs."""

    def annotate(layer):
        if _standalone_batch_norm(layer):
            return _quantize_keras.quantize_annotate_layer(
                layer, quantize_config=_OutputQuantizeConfig()
            )
        return _quantize_keras.quantize_annotate_layer(layer)

    annotated = tf_keras.models.clone_model(model, clone_function=annotate)
    if prune:
        # Keeps the pruned zeros through the QAT fine-tuning.
        scheme = (
            tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
        )
    else:
        scheme = _quantize_keras.default_8bit.Default8BitQuantizeScheme()
    with _quantize_keras.quantize_scope(
        {"_OutputQuantizeConfig": _OutputQuantizeConfig}
    ):
        return _quantize_keras.quantize_apply(annotated, scheme)


def _convert_int8(model, images) -> bytes:
    """Full-integer conversion: int8 weights, activations, input, output."""
    with tempfile.TemporaryDirectory(prefix="snas-qat-sm-") as saved:
        write_frozen_saved_model(model, saved, tuple(images.shape[1:]))
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        # The fake-quant ranges cover the QAT graph; the representative
        # data calibrates whatever they do not (and the int8 input).
        converter.representative_dataset = lambda: (
            [image[None]] for image in images
        )
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8
        ]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        return converter.convert()


def _write(path, content: bytes) -> None:
    """Writes `path` whole or not at all."""
    partial = f"{path}.partial"
    with open(partial, "wb") as f:
        f.write(content)
    os.replace(partial, path)


def run(spec) -> dict:
    """Fine-tunes and converts as `spec` says; returns the metadata."""
    start = time.time()
    tf_keras.utils.set_random_seed(spec["seed"])
    with np.load(spec["data"]) as arrays:
        data = {k: arrays[k] for k in arrays.files}
    steps_per_run = math.ceil(len(data["labels"]) / spec["batch_size"])
    steps = steps_per_run * spec["epochs"] * (2 if spec["prune"] else 1)
    if steps <= _FEW_STEPS:
        tf.config.optimizer.set_experimental_options(
            {"disable_meta_optimizer": True}
        )
    twin = build_child_network(
        spec["genotype"],
        auxiliary=False,
        layers=tf_keras.layers,
        **spec["child_kwargs"],
    )
    _load_weights(twin, spec["weights"])
    check, reference = data["check_images"], data["check_logits"]
    meta = {
        "twin_max_abs_diff": _checked_diff(
            "The tf_keras twin", twin, check, reference
        )
    }
    model = split_concat_batch_norms(twin)
    meta["split_max_abs_diff"] = _checked_diff(
        "The BN-split twin", model, check, reference
    )
    meta["split_batch_norms"] = len(model.layers) - len(twin.layers)
    if spec["freeze_batch_norm"]:
        _freeze_batch_norms(model)
    if spec["prune"]:
        model, meta["prune_losses"] = _prune(model, spec, data)
    qat = _quantize(model, spec["prune"])
    meta["losses"] = _fine_tune(qat, spec, data)
    meta["conv_sparsity"] = _conv_sparsity(qat)
    meta["final_loss"] = meta["losses"][-1]
    meta["steps"] = steps
    qat_logits = np.asarray(qat(check, training=False))
    meta["qat_top1_agreement"] = float(
        np.mean(qat_logits.argmax(-1) == reference.argmax(-1))
    )
    flatbuffer = _convert_int8(
        qat, data["images"][: spec["calibration_images"]]
    )
    _write(spec["out_path"], flatbuffer)
    meta.update(
        path=spec["out_path"],
        bytes=len(flatbuffer),
        seconds=time.time() - start,
    )
    return meta


def main(argv) -> int:
    """Runs the spec file named in `argv`; writes its metadata JSON."""
    if len(argv) != 1:
        print(
            "usage: python -m snas_tf.export.qat_worker SPEC.json",
            file=sys.stderr,
        )
        return 2
    with open(argv[0]) as f:
        spec = json.load(f)
    meta = run(spec)
    with open(spec["metadata_path"], "w") as f:
        json.dump(meta, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
