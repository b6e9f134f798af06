"""Shared test helpers: tiny search spaces, a layer round-trip harness and
the `snas` console script in a subprocess."""

import os
import subprocess
import sys

import keras
import numpy as np

from snas_tf.search_space import SearchSpace

# A small op set with one op of each family keeps graphs (and tests) fast.
TINY_PRIMITIVES = ("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3")
TINY_SPACE = SearchSpace(TINY_PRIMITIVES, num_nodes=2)
# Overrides of a 3-cell, 4-channel digits retraining at 8x8.
TINY_RETRAIN = (
    "child.num_layers=3",
    "child.channels=4",
    "child.auxiliary=false",
    "data.dataset=digits",
    "data.image_size=8",
)


def tiny_supernet(**overrides):
    from snas_tf.models.snas_supernet import SNASSupernet

    kwargs = dict(
        num_classes=3,
        channels=4,
        num_cells=1,
        num_nodes=TINY_SPACE.num_nodes,
        primitives=TINY_PRIMITIVES,
        seed=1,
    )
    kwargs.update(overrides)
    return SNASSupernet(**kwargs)


def tiny_child(genotype="SNAS_moderate", num_classes=3, image_size=16):
    """A 3-cell, 4-channel child network without the auxiliary head."""
    from snas_tf.models.child_network import build_child_network

    return build_child_network(
        genotype,
        num_classes=num_classes,
        channels=4,
        num_layers=3,
        image_size=image_size,
        auxiliary=False,
    )


def tiny_data(n=4, size=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size, 3)).astype("float32")
    y = rng.integers(0, classes, size=(n,)).astype("int32")
    return x, y


def grappler_off():
    """Whether TF's graph optimiser is off for functions first run now
    (read from TF, not through the code under test)."""
    import tensorflow as tf

    options = tf.config.optimizer.get_experimental_options()
    return bool(options.get("disable_meta_optimizer"))


def is_single_function(train_function):
    """Whether a model's train function is `single_function_step`'s."""
    return train_function.__qualname__.startswith("single_function_step")


def assert_config_round_trip(layer):
    """from_config(get_config()) rebuilds an equal config."""
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    return clone


def assert_keras_file_round_trip(model, inputs, tmp_path, **call_kwargs):
    """Saving to .keras and loading gives the same outputs."""
    path = tmp_path / "model.keras"
    expected = keras.ops.convert_to_numpy(model(inputs, **call_kwargs))
    model.save(path)
    loaded = keras.saving.load_model(path)
    got = keras.ops.convert_to_numpy(loaded(inputs, **call_kwargs))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    return loaded


# The console script of this venv, and the wrapper that SIGKILLs it.
SNAS = os.path.join(os.path.dirname(sys.executable), "snas")
KILLED_RUN = os.path.join(os.path.dirname(__file__), "killed_run.py")


def run_snas(argv, kill=None, timeout=300):
    """Runs `snas ARGV` in a subprocess (with `kill=[mode, n]`, under
    killed_run.py) and returns the `CompletedProcess` (text output)."""
    prefix = [sys.executable, KILLED_RUN, *kill] if kill else [SNAS]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        prefix + [str(a) for a in argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def retrained_accuracy(model_dir):
    """Top-1 accuracy of a retraining's `model.keras` on its validation
    data (its `config.yaml`'s evaluation pipeline), computed here from the
    predictions: what its reported `val_accuracy` must be."""
    from snas_tf.config import RetrainConfig, load_config
    from snas_tf.data import retrain_data

    config = load_config(
        [os.path.join(model_dir, "config.yaml")], config_class=RetrainConfig
    )
    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    data = retrain_data(
        config.data, config.train.batch_size, config.runtime.seed
    )
    hits = total = 0
    for images, labels in data.validation:
        predicted = np.argmax(model.predict(images, verbose=0), axis=-1)
        hits += int(np.sum(predicted == np.asarray(labels)))
        total += len(predicted)
    return hits / total


def fit_probe(model, images, labels, num_classes):
    """BN statistics from one training-mode pass; a ridge-regression
    classifier on the pooled features: an untrained child network whose
    logits separate the classes as a trained one's do (a Keras 3 `fit`
    spends ~45 s tracing it)."""
    bns = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0  # the batch statistics replace the initial ones
    model(images, training=True)
    for bn, momentum in zip(bns, momenta, strict=True):
        bn.momentum = momentum
    pooled = keras.Model(model.input, model.get_layer("global_pool").output)
    features = np.asarray(pooled(images, training=False), np.float64)
    features = np.concatenate([features, np.ones((len(features), 1))], 1)
    targets = 10.0 * np.eye(num_classes)[labels] - 1.0
    gram = features.T @ features + 1e-2 * np.eye(features.shape[1])
    weights = np.linalg.solve(gram, features.T @ targets).astype(np.float32)
    model.get_layer("classifier").set_weights([weights[:-1], weights[-1]])


def plain_compile(model, lr=1.0, arch_lr=1.0):
    """Plain SGD, no decay, no clipping: an update is exactly -lr * grad."""
    import keras

    model.compile(
        optimizer=keras.optimizers.SGD(lr),
        arch_optimizer=keras.optimizers.SGD(arch_lr),
        weight_decay=0.0,
        arch_weight_decay=0.0,
        clipnorm=None,
        arch_clipnorm=None,
        jit_compile=False,
    )


def values(variables):
    """NumPy copies of `variables`' current values."""
    import keras

    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]
