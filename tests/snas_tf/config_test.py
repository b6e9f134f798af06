"""Tests of the strict YAML config loader."""

import glob
import os

import pytest
import yaml

from snas_tf.config import Config, load_config, save_config

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


@pytest.mark.parametrize(
    "path", sorted(glob.glob(os.path.join(CONFIG_DIR, "*.yaml")))
)
def test_every_shipped_config_loads(path):
    config = load_config([path])
    assert isinstance(config, Config)


def test_defaults_follow_the_paper():
    config = load_config()
    assert config.model.num_cells == 8 and config.model.channels == 16
    assert config.search.batch_size == 64
    assert config.search.temperature_final == pytest.approx(0.03)


def test_files_merge_in_order_then_overrides(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("search: {epochs: 3, batch_size: 8}\n")
    b.write_text("search: {epochs: 5}\n")
    config = load_config([a, b], ["search.batch_size=4", "data.data_dir=~"])
    assert config.search.epochs == 5
    assert config.search.batch_size == 4
    assert config.data.data_dir is None  # YAML "~" is null


@pytest.mark.parametrize(
    "override, message",
    [
        ("search.epoch=3", "'search.epoch'"),
        ("searchh.epochs=3", "'searchh'"),
        ("search.epochs=three", "'three'"),
        ("search.epochs", "section.key=value"),
        ("data.augment=7", "augment"),
    ],
)
def test_bad_overrides_name_the_bad_key_or_value(override, message):
    with pytest.raises(ValueError, match=message):
        load_config([], [override])


def test_unknown_file_key_lists_valid_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {chanels: 4}\n")
    with pytest.raises(ValueError, match="model.channels"):
        load_config([path])


def test_missing_file_and_invalid_yaml(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_config([tmp_path / "nope.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [\n")
    with pytest.raises(ValueError, match="Invalid YAML"):
        load_config([bad])


def test_saved_config_round_trips(tmp_path):
    config = load_config([], ["model.primitives=[none, skip_connect]"])
    path = tmp_path / "config.yaml"
    save_config(config, path)
    assert load_config([path]) == config
    assert yaml.safe_load(path.read_text())["model"]["primitives"] == [
        "none",
        "skip_connect",
    ]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]
