"""End-to-end tests of `run_retrain` / `snas retrain` (SNAS §3.2-3.3)."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from snas_tf.config import RetrainConfig, load_config
from snas_tf.data import retrain_data
from snas_tf.trainers import cli
from snas_tf.trainers.retrain import build_trainer, run_retrain

TINY = [
    "child.channels=4",
    "child.num_layers=3",
    "child.auxiliary=false",
    "train.epochs=2",
    "train.batch_size=8",
    "train.drop_path_prob=0.2",
    "data.dataset=digits",
    "data.image_size=8",
    "data.max_examples=48",
    "data.cutout=2",
    "runtime.verbose=0",
]


def _is_built_in(layer):
    return type(layer).__module__.startswith("keras.src.layers")


@pytest.mark.slow
def test_cli_retrain_on_digits_writes_every_output(tmp_path, capsys):
    run = tmp_path / "run"
    code = cli.main(
        ["retrain", "--model-dir", str(run), "--genotype", "SNAS_mild"]
        + [f"--override={o}" for o in TINY]
    )
    assert code == 0, capsys.readouterr().err
    for name in ("config.yaml", "genotype.json", "history.json"):
        assert (run / name).is_file(), name
    assert os.listdir(run / "checkpoints") and os.listdir(run / "logs")
    config = load_config([run / "config.yaml"], config_class=RetrainConfig)
    assert config == load_config([], TINY, RetrainConfig)
    history = json.loads((run / "history.json").read_text())["epochs"]
    assert [e["epoch"] for e in history] == [0, 1]
    assert {"accuracy", "top5_accuracy", "val_accuracy"} <= set(history[0])
    # The shipped model: flat, built-in layers only, no drop-path, loadable
    # without any custom object.
    model = keras.saving.load_model(run / "model.keras")
    assert all(_is_built_in(layer) for layer in model.layers)
    assert not any("drop_path" in layer.name for layer in model.layers)
    assert "Genotype: " in capsys.readouterr().out


@pytest.mark.slow
def test_retrain_on_mocked_cifar10_with_the_auxiliary_head(tmp_path):
    overrides = [
        "child.channels=4",
        "child.num_layers=3",
        "train.epochs=1",
        "train.batch_size=4",
        "train.label_smoothing=0.1",
        "data.dataset=cifar10",
        "data.image_size=32",
        "runtime.verbose=0",
    ]
    config = load_config([], overrides, RetrainConfig)
    with tfds.testing.mock_data(num_examples=8):
        summary = run_retrain(config, "SNAS_moderate", tmp_path)
    model = keras.saving.load_model(tmp_path / "model.keras")
    # The auxiliary head trained but is not shipped.
    assert len(model.outputs) == 1
    assert not any(layer.name.startswith("aux_") for layer in model.layers)
    assert summary["parameters"] == sum(
        int(np.prod(w.shape)) for w in model.trainable_weights
    )
    assert 0.0 <= summary["val_accuracy"] <= 1.0


def test_an_unknown_genotype_fails_before_anything_is_written(tmp_path):
    config = load_config([], TINY, RetrainConfig)
    with pytest.raises(ValueError, match="NO_SUCH_GENOTYPE"):
        run_retrain(config, "NO_SUCH_GENOTYPE", tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_cli_bad_config_key_is_one_line_and_writes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    code = cli.main(
        ["retrain", "--model-dir", str(run), "--override", "train.epoch=1"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "'train.epoch'" in err and "train.epochs" in err
    assert not run.exists()


def _train_two_steps(config, strategy, initial_weights=None):
    data = retrain_data(config.data, config.train.batch_size, seed=0)
    with strategy.scope():
        trainer = build_trainer(
            config, "SNAS_moderate", data.num_classes, data.steps_per_epoch
        )
        if initial_weights is not None:
            trainer.network.set_weights(initial_weights)
    start = [np.array(w) for w in trainer.network.get_weights()]
    trainer.fit(data.train.take(2), epochs=1, verbose=0)
    return start, trainer.network.get_weights()


def _two_step_config(sync):
    # Deterministic settings: no drop-path, no augmentation; the same
    # global batch of 4 is split over the two logical CPUs.
    return load_config(
        [],
        TINY
        + [
            "train.drop_path_prob=0",
            "train.batch_size=4",
            "data.augment=none",
            "data.cutout=0",
            f"train.sync_batch_norm={str(sync).lower()}",
        ],
        RetrainConfig,
    )


def _max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


@pytest.mark.slow
def test_mirrored_retrain_equals_one_device_with_sync_batch_norm(mirrored):
    # One device: sync_batch_norm has nothing to synchronise, so one run
    # is the reference of both mirrored runs.
    start, single = _train_two_steps(
        _two_step_config(True), tf.distribute.get_strategy()
    )
    assert _max_diff(single, start) > 1e-3  # training happened
    for sync in (True, False):
        _, multi = _train_two_steps(
            _two_step_config(sync), mirrored, initial_weights=start
        )
        diff = _max_diff(single, multi)
        # Per-replica BatchNorm statistics differ from the global batch's.
        assert (diff < 1e-4) == sync, (sync, diff)


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["data.dataset=no_such_dataset"], "no_such_dataset"),
        (["data.dataset=imagenet2012", "data.data_dir={tmp}/tfds"], "manual"),
        (["data.dataset=image_folder", "data.data_dir={tmp}/empty"], "empty"),
        (["child.network=mobilenet"], "mobilenet"),
        (["train.lr_schedule=step"], "step"),
        (["train.epochs=two"], "'two'"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(
    tmp_path, capsys, overrides, named
):
    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    run = tmp_path / "run"
    run.mkdir()
    (run / "keep.txt").write_text("previous results")
    args = ["retrain", "--model-dir", str(run)]
    for o in TINY + overrides:
        args.append(f"--override={o.format(tmp=tmp_path)}")
    code = cli.main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and named in err
    assert sorted(os.listdir(run)) == ["keep.txt"]
    assert (run / "keep.txt").read_text() == "previous results"


def test_mixed_precision_builds_a_bfloat16_network_and_restores_policy():
    config = load_config(
        [], TINY + ["train.mixed_precision=true"], RetrainConfig
    )
    data = retrain_data(config.data, config.train.batch_size, seed=0)
    trainer = build_trainer(
        config, "SNAS_moderate", data.num_classes, data.steps_per_epoch
    )
    assert keras.mixed_precision.dtype_policy().name == "float32"
    conv = trainer.network.get_layer("stem_conv")
    assert conv.dtype_policy.name == "mixed_bfloat16"
    assert conv.kernel.dtype == "float32"  # variables stay float32
    logs = trainer.fit(data.train.take(1), epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0])
