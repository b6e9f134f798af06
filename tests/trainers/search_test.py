"""End-to-end: a tiny search on the bundled digits through the CLI path."""

import json
import os

import pytest
from testing_utils import grappler_off

from snas_tf.config import load_config
from snas_tf.genotype import Genotype
from snas_tf.trainers import cli
from snas_tf.trainers.search import run_search

TINY = [
    "model.channels=4",
    "model.num_cells=3",
    "model.num_nodes=2",
    "model.primitives=[none, max_pool_3x3, skip_connect, sep_conv_3x3]",
    "search.epochs=2",
    "search.batch_size=16",
    "data.dataset=digits",
    "data.image_size=8",
    "data.max_examples=96",
    "runtime.verbose=0",
]


@pytest.mark.slow
def test_run_search_writes_every_output(tmp_path):
    import keras

    seen = []
    record = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: seen.append(grappler_off())
    )
    config = load_config([], TINY)
    assert not grappler_off()
    summary = run_search(config, tmp_path, callbacks=[record])
    # Grappler off for the search only (runtime.grappler null, no GPU): a
    # SavedModel loaded later in this process is optimised as usual.
    assert seen == [True] and not grappler_off()
    for name in ("config.yaml", "genotype.json", "history.json"):
        assert (tmp_path / name).is_file(), name
    assert os.listdir(tmp_path / "checkpoints")
    assert os.listdir(tmp_path / "logs")
    assert "alpha_epochs.png" in os.listdir(tmp_path / "plots")
    assert load_config([tmp_path / "config.yaml"]) == config
    genotype = Genotype.from_json((tmp_path / "genotype.json").read_text())
    assert genotype.to_string() == summary["genotype"]
    history = json.loads((tmp_path / "history.json").read_text())
    epochs = history["epochs"]
    assert [e["epoch"] for e in epochs] == [0, 1]
    # λ follows the schedule; supernet and child accuracy are both logged.
    assert epochs[0]["temperature"] == pytest.approx(1.0)
    assert epochs[1]["temperature"] == pytest.approx(0.03)
    for key in ("val_accuracy", "val_child_accuracy", "entropy_normal"):
        assert key in epochs[-1]
    assert len(history["history"]["loss"]) == 2


def test_cli_reports_a_bad_override_in_one_line(tmp_path, capsys):
    code = cli.main(
        ["search", "--override", "search.epoch=1", "--model-dir", str(tmp_path)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "'search.epoch'" in err
    assert not os.listdir(tmp_path)


def test_cli_unknown_dataset_is_a_clear_error(tmp_path, capsys):
    code = cli.main(
        ["search", "--model-dir", str(tmp_path / "run")]
        + [f"--override={o}" for o in TINY]
        + ["--override", "data.dataset=no_such_dataset"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "no_such_dataset" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_run_search_on_mocked_cifar10(tmp_path):
    import tensorflow_datasets as tfds

    overrides = [o for o in TINY if not o.startswith("data.")] + [
        "data.dataset=cifar10",
        "data.image_size=8",
        "data.cutout=2",
        "search.batch_size=4",
        "search.epochs=1",
    ]
    config = load_config([], overrides)
    with tfds.testing.mock_data(num_examples=24):
        summary = run_search(config, tmp_path)
    genotype = Genotype.from_json((tmp_path / "genotype.json").read_text())
    assert genotype.to_string() == summary["genotype"]
    history = json.loads((tmp_path / "history.json").read_text())
    assert "val_child_accuracy" in history["epochs"][0]


def test_mixed_precision_search_computes_in_bfloat16_and_restores_policy():
    import keras
    import numpy as np

    from snas_tf.trainers.search import build_supernet

    config = load_config([], TINY + ["search.mixed_precision=true"])
    model = build_supernet(config, num_classes=10, steps_per_epoch=2)
    assert keras.mixed_precision.dtype_policy().name == "float32"
    assert model.compute_dtype == "bfloat16"
    assert model.arch_logits_normal.dtype == "float32"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 10, size=(4,))
    before = model.arch_logits_normal.numpy().copy()
    logs = model.fit(x, y, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"]).all()
    assert not np.array_equal(model.arch_logits_normal.numpy(), before)


@pytest.mark.parametrize(
    "overrides, rate",
    [
        ([], 0.3),
        (["search.drop_path_prob=0.1"], 0.1),
        (["search.mode=darts"], 0),
    ],
)
def test_build_supernet_passes_the_drop_path_rate(overrides, rate):
    from snas_tf.trainers.search import build_supernet

    config = load_config([], TINY + overrides)
    model = build_supernet(config, num_classes=10, steps_per_epoch=2)
    assert model.drop_path_prob == rate
