"""Tests of the strict YAML config loader."""

import glob
import os

import pytest
import yaml

from snas_tf.config import Config, RetrainConfig, load_config, save_config

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "configs")


@pytest.mark.parametrize(
    "path", sorted(glob.glob(os.path.join(CONFIG_DIR, "*.yaml")))
)
def test_every_shipped_config_loads(path):
    # *_search.yaml are searches; the others retrainings.
    cls = Config if path.endswith("_search.yaml") else RetrainConfig
    config = load_config([path], config_class=cls)
    assert isinstance(config, cls)


def test_retrain_defaults_follow_the_paper():
    config = load_config(config_class=RetrainConfig)
    assert (config.child.num_layers, config.child.channels) == (20, 36)
    assert config.train.epochs == 600 and config.train.batch_size == 96
    assert config.train.drop_path_prob == pytest.approx(0.2)
    assert config.data.cutout == 16


def test_a_section_override_keeps_the_sections_other_defaults():
    # RetrainConfig's data default has cutout 16; setting another data key
    # must not reset it to DataConfig's 0.
    config = load_config([], ["data.dataset=digits"], RetrainConfig)
    assert config.data.dataset == "digits" and config.data.cutout == 16


def test_mobile_config_is_the_paper_setting():
    config = load_config(
        [os.path.join(CONFIG_DIR, "imagenet_mobile.yaml")],
        config_class=RetrainConfig,
    )
    assert config.child.genotype == "SNAS_moderate"
    assert (config.child.network, config.child.channels) == ("imagenet", 48)
    assert config.data.image_size == 224
    assert config.train.label_smoothing == pytest.approx(0.1)
    assert config.train.lr_schedule == "exponential"


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


def test_a_float_written_without_a_dot_is_a_float():
    # YAML 1.1 reads 3e-4 as a string; the loader accepts it as a float.
    config = load_config([], ["search.weight_decay=3e-4"])
    assert config.search.weight_decay == pytest.approx(3e-4)
    with pytest.raises(ValueError, match="'lots'"):
        load_config([], ["search.weight_decay=lots"])


def test_recompute_takes_a_flag_or_a_number_of_cells():
    assert load_config([], ["model.recompute=true"]).model.recompute is True
    assert load_config([], ["model.recompute=2"]).model.recompute == 2
    with pytest.raises(ValueError, match="expects bool or int, got 'some'"):
        load_config([], ["model.recompute=some"])
