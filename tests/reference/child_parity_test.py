"""Child networks compute the authors' numbers (docs/parity.md §1).

Each fixture in `fixtures/` holds an official PyTorch child network's
state_dict, an input batch and what the official code computed from them
(`generate_fixtures.py` says how they were made; PyTorch is not needed
here). The state_dict goes into our Keras child through
`load_torch_state_dict`, and per tensor
`max|ours - ref| <= RTOL * max|ref| + ATOL` must hold for the eval-mode
logits and auxiliary logits, the train-mode ones (batch statistics, no
drop-path), the gradient of CE + 0.4 * aux CE for every weight and the
BatchNorm moving statistics after that train-mode call. The
same model built in float64 must agree to float32 rounding of the stored
numbers (`RTOL_FLOAT64`): the computations are the same, not only close.
"""

import pathlib
import sys

import keras
import numpy as np
import parity_utils
import pytest
import tensorflow as tf
from parity_utils import failures

from snas_tf.models.child_network import build_child_network
from snas_tf.models.torch_import import (
    genotype_from_torch,
    load_torch_state_dict,
    torch_tensor_map,
)

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
CASES = (
    "cifar_edge_all_coverage",
    "cifar_edge_all_moderate",
    "imagenet_darts_moderate",
)
# The fixtures are float32, computed in float64 from float32-exact inputs.
RTOL_FLOAT64 = 1e-6
REGENERATE = "python tests/reference/generate_fixtures.py SNAS_DIR"
_LAYOUTS = {"model_edge_all": "edge_all", "model": "darts"}


def load_fixture(case):
    return parity_utils.load_fixture(case, REGENERATE, FIXTURES)


def run_case(case, dtype="float32"):
    """Our numbers, computed in `dtype`, and the reference's for one
    fixture, as {group: {tensor: (ours, ref)}}, arrays in the Keras
    layout."""
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        return _run_case(case)
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)


def _run_case(case):
    meta, arrays = load_fixture(case)
    layout = _LAYOUTS[meta["module"]]
    model = build_child_network(
        genotype_from_torch(meta, layout),
        network=meta["network"],
        num_classes=meta["classes"],
        channels=meta["channels"],
        num_layers=meta["layers"],
        image_size=meta["image"],
        auxiliary=True,
        layout=layout,
    )
    state = {
        k.removeprefix("state/"): v
        for k, v in arrays.items()
        if k.startswith("state/")
    }
    load_torch_state_dict(model, state, meta, layout)
    x = tf.constant(
        np.transpose(arrays["input"], (0, 2, 3, 1)), dtype=keras.config.floatx()
    )
    labels = tf.constant(arrays["labels"])
    out = {}
    logits, aux = model(x, training=False)
    out["eval"] = {
        "logits": (logits.numpy(), arrays["eval/logits"]),
        "aux_logits": (aux.numpy(), arrays["eval/aux_logits"]),
    }
    ce = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = {}
    reference_grads = _reference_gradients(arrays)
    for torch_name, layer_name, index, axes in torch_tensor_map(
        model, meta, layout
    ):
        if torch_name in reference_grads:
            variables[torch_name] = (
                model.get_layer(layer_name).weights[index],
                axes,
            )
    with tf.GradientTape() as tape:
        logits, aux = model(x, training=True)
        loss = ce(labels, logits) + meta["aux_weight"] * ce(labels, aux)
    grads = tape.gradient(loss, [v for v, _ in variables.values()])
    out["train"] = {
        "logits": (logits.numpy(), arrays["train/logits"]),
        "aux_logits": (aux.numpy(), arrays["train/aux_logits"]),
        "loss": (loss.numpy(), arrays["train/loss"]),
    }
    out["grad"] = {}
    for (name, (_, axes)), grad in zip(variables.items(), grads, strict=True):
        ref = reference_grads[name]
        ref = ref if axes is None else np.transpose(ref, axes)
        out["grad"][name] = (grad.numpy(), ref)
    missing = set(reference_grads) - set(variables)
    assert not missing, f"no weight for the reference gradients {missing}"
    out["moving"] = _moving_statistics(model, state, arrays, meta, layout)
    return out


def _reference_gradients(arrays):
    """{torch name: gradient}. The auxiliary head's 768-channel conv on a
    2x2 map is stored as the factors its gradient sums over the batch
    (its input and output gradient), in float64."""
    out = {k[5:]: v for k, v in arrays.items() if k.startswith("grad/")}
    for key in arrays:
        if key.startswith("grad_factors/") and key.endswith("/input"):
            name = key[len("grad_factors/") : -len("/input")]
            dy = arrays[f"grad_factors/{name}/output_grad"]
            out[name] = np.einsum("no,nikl->oikl", dy[:, :, 0, 0], arrays[key])
    return out


def _moving_statistics(model, state, arrays, meta, layout):
    """BatchNorm moving statistics after the one train-mode call.

    PyTorch updates running_var with the unbiased batch variance, Keras'
    built-in layer with the biased one (docs/decisions.md); ours are
    rescaled by n / (n - 1), n the values per channel, to compare the rest.
    """
    out = {}
    for torch_name, layer_name, index, _ in torch_tensor_map(
        model, meta, layout
    ):
        if ".running_" not in torch_name:
            continue
        layer = model.get_layer(layer_name)
        ours = layer.weights[index].numpy().astype(np.float64)
        if torch_name.endswith("running_var"):
            n = np.prod(layer.input.shape[1:-1]) * arrays["input"].shape[0]
            old = layer.momentum * state[torch_name]
            ours = old + (ours - old) * n / (n - 1)
        out[torch_name] = (ours, arrays[f"train_state/{torch_name}"])
    return out


@pytest.fixture(scope="module", params=CASES)
def results(request):
    return run_case(request.param)


@pytest.mark.parametrize("group", ["eval", "train", "grad", "moving"])
def test_matches_reference(results, group):
    bad = failures(results[group])
    assert not bad, f"{len(bad)} of {len(results[group])}: " + "; ".join(
        bad[:5]
    )


@pytest.mark.parametrize("case", CASES)
def test_float64_matches_reference_to_rounding(case):
    results = run_case(case, "float64")
    for group, pairs in results.items():
        bad = failures(pairs, RTOL_FLOAT64)
        assert not bad, f"{group}: {len(bad)} of {len(pairs)}: " + "; ".join(
            bad[:5]
        )


def test_missing_fixture_fails_naming_it(monkeypatch):
    monkeypatch.setattr(
        sys.modules[__name__], "FIXTURES", pathlib.Path("/nowhere")
    )
    with pytest.raises(pytest.fail.Exception, match="nowhere/absent.npz"):
        load_fixture("absent")
