"""End-to-end tests of `run_retrain` / `snas retrain` (SNAS §3.2-3.3)."""

import json
import os
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from testing_utils import retrained_accuracy

from snas_tf.config import RetrainConfig, load_config
from snas_tf.data import retrain_data
from snas_tf.layers import DropPath
from snas_tf.trainers import cli, retrain
from snas_tf.trainers.retrain import (
    build_trainer,
    learning_rate_schedule,
    run_retrain,
)

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"

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


def _record_epoch_starts(monkeypatch):
    """Makes `run_retrain`'s fit record, at each epoch's start (after its
    own callbacks), the epoch, the DropPath layers' rates and the
    optimizer's learning rate."""
    seen = []
    real = retrain.fit_resumable

    def recording(
        model, make_train, validation, epochs, steps, callbacks, *a, **k
    ):
        def record(epoch, logs):
            rates = {
                float(keras.ops.convert_to_numpy(layer.rate))
                for layer in model.network.layers
                if isinstance(layer, DropPath)
            }
            lr = float(
                keras.ops.convert_to_numpy(model.optimizer.learning_rate)
            )
            seen.append((epoch, sorted(rates), lr))

        callbacks = [
            *callbacks,
            keras.callbacks.LambdaCallback(on_epoch_begin=record),
        ]
        return real(
            model, make_train, validation, epochs, steps, callbacks, *a, **k
        )

    monkeypatch.setattr(retrain, "fit_resumable", recording)
    return seen


@pytest.mark.slow
def test_cli_retrain_on_digits_writes_every_output(
    tmp_path, capsys, monkeypatch
):
    seen = _record_epoch_starts(monkeypatch)
    run = tmp_path / "run"
    code = cli.main(
        ["retrain", "--model-dir", str(run), "--genotype", "SNAS_mild"]
        + [f"--override={o}" for o in TINY]
    )
    assert code == 0, capsys.readouterr().err
    # Drop-path 0.2 over 2 epochs ramps 0, 0.1 (rate · epoch / epochs) on
    # every DropPath layer; the cosine learning rate starts at the default
    # 0.025 and is halfway to learning_rate_min 0 after one of two epochs.
    assert seen == [
        (0, [0.0], pytest.approx(0.025)),
        (1, [pytest.approx(0.1)], pytest.approx(0.0125)),
    ]
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
        # The reported accuracy is the shipped model's on the test split.
        assert summary["val_accuracy"] == pytest.approx(
            retrained_accuracy(tmp_path), abs=1e-6
        )
    model = keras.saving.load_model(tmp_path / "model.keras")
    # The auxiliary head trained but is not shipped.
    assert len(model.outputs) == 1
    assert not any(layer.name.startswith("aux_") for layer in model.layers)
    assert summary["parameters"] == sum(
        int(np.prod(w.shape)) for w in model.trainable_weights
    )


def _lr(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


@pytest.mark.parametrize("lr_min", [0.0, 0.001])
def test_cosine_learning_rate_runs_between_the_configured_rates(lr_min):
    config = load_config(
        [CONFIGS / "cifar10_retrain.yaml"],
        ["train.epochs=4", f"train.learning_rate_min={lr_min}"],
        RetrainConfig,
    )
    schedule = learning_rate_schedule(config.train, steps_per_epoch=5)
    rates = [_lr(schedule, step) for step in range(21)]
    # configs/cifar10_retrain.yaml: 0.025; the end is after 4 x 5 steps.
    assert rates[0] == pytest.approx(0.025)
    assert rates[20] == pytest.approx(lr_min, abs=1e-9)
    # Half a cosine: halfway at the middle, falling every step.
    assert rates[10] == pytest.approx((0.025 + lr_min) / 2)
    assert all(b < a for a, b in zip(rates, rates[1:], strict=False))


def test_exponential_learning_rate_is_x0_97_once_per_epoch():
    config = load_config([CONFIGS / "imagenet_mobile.yaml"], [], RetrainConfig)
    schedule = learning_rate_schedule(config.train, steps_per_epoch=5)
    # configs/imagenet_mobile.yaml: 0.1, x0.97 after every epoch.
    expected = [0.1 * 0.97 ** (step // 5) for step in range(16)]
    got = [_lr(schedule, step) for step in range(16)]
    assert got == pytest.approx(expected, rel=1e-6)


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
