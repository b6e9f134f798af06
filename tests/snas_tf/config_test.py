"""Tests of the strict YAML config loader."""

import dataclasses
import glob
import math
import os
import re
import subprocess
import sys
import typing

import pytest
import yaml

from snas_tf import config as config_module
from snas_tf.config import (
    ChildConfig,
    Config,
    DataConfig,
    ModelConfig,
    RetrainConfig,
    RuntimeConfig,
    SearchConfig,
    TrainConfig,
    load_config,
    save_config,
)
from snas_tf.config_checks import RULES, Choices, Interval

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


@pytest.mark.parametrize(
    "overrides, eta, rule, drop",
    [
        ([], 1.5e-3, "edge_all", 0.3),
        (["search.mode=darts"], 0.0, "top2", 0.0),
        (["search.mode=darts_single_level"], 1.5e-3, "edge_all", 0.3),
        (
            [
                "search.mode=darts",
                "search.penalty_strength=2e-3",
                "search.derivation_rule=edge_all",
                "search.drop_path_prob=0.2",
            ],
            2e-3,
            "edge_all",
            0.2,
        ),
        (
            ["search.derivation_rule=top2", "search.drop_path_prob=0"],
            1.5e-3,
            "top2",
            0.0,
        ),
    ],
)
def test_null_penalty_rule_and_drop_path_are_the_modes(
    overrides, eta, rule, drop
):
    # Bi-level DARTS as its authors run it: no resource penalty, two
    # edges per node, no drop-path; an explicit value wins in every mode.
    s = load_config([], overrides).search
    assert s.resolved_penalty_strength == pytest.approx(eta)
    assert s.resolved_derivation_rule == rule
    assert s.resolved_drop_path_prob == drop
    assert SearchConfig().arch_fraction == 0.5


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


# Each section dataclass: the job config holding it and its section name.
SECTIONS = {
    ModelConfig: (Config, "model"),
    SearchConfig: (Config, "search"),
    DataConfig: (Config, "data"),
    RuntimeConfig: (Config, "runtime"),
    ChildConfig: (RetrainConfig, "child"),
    TrainConfig: (RetrainConfig, "train"),
}


def _types(cls, name):
    """The types a field of `cls` may hold, None left out."""
    hint = typing.get_type_hints(cls)[name]
    return (set(typing.get_args(hint)) or {hint}) - {type(None)}


def test_every_section_and_every_field_has_a_rule():
    jobs = {Config, RetrainConfig}
    sections = {
        cls
        for cls in vars(config_module).values()
        if dataclasses.is_dataclass(cls) and cls not in jobs
    }
    assert sections == set(SECTIONS)
    for cls in SECTIONS:
        rules = RULES[cls.__name__]
        names = [f.name for f in dataclasses.fields(cls)]
        assert set(rules) <= set(names), cls
        for name in names:
            where = f"{cls.__name__}.{name} has no rule in config_checks"
            if _types(cls, name) == {bool}:
                continue
            assert name in rules, where
            if _types(cls, name) & {int, float}:
                assert isinstance(rules[name], Interval), where


def _nudge(value, direction, is_int):
    """The next value above (direction 1) or below (-1) `value`."""
    if is_int:
        return value + direction
    return math.nextafter(value, direction * math.inf)


def _boundary_cases():
    """(key, config class, overrides, passes) just inside and just outside
    each end of every interval. A field that bounds others (learning_rate
    bounds learning_rate_min) is tried with those at their lowest."""
    for cls, (job, section) in SECTIONS.items():
        defaults = getattr(job(), section)
        rules = RULES[cls.__name__]
        for name, rule in rules.items():
            if not isinstance(rule, Interval):
                continue
            key = f"{section}.{name}"
            is_int = int in _types(cls, name)
            low_inside = (
                _nudge(rule.low, 1, is_int) if rule.low_open else rule.low
            )
            # The fields bounded by this one, at their lowest.
            bounded = [
                f"{section}.{other}="
                + repr(
                    _nudge(r.low, 1, int in _types(cls, other))
                    if r.low_open
                    else r.low
                )
                for other, r in rules.items()
                if isinstance(r, Interval) and r.high == name
            ]
            values = [(low_inside, True)]
            values.append(
                (
                    rule.low if rule.low_open else _nudge(rule.low, -1, is_int),
                    False,
                )
            )
            if rule.even:
                values.append((low_inside + 1, False))
            high = rule.high
            if isinstance(high, str):
                high = getattr(defaults, high)
            if high != math.inf:
                values.append(
                    (_nudge(high, -1, is_int) if rule.high_open else high, True)
                )
                values.append(
                    (high if rule.high_open else _nudge(high, 1, is_int), False)
                )
            for value, passes in values:
                overrides = [*bounded, f"{key}={value!r}"]
                yield pytest.param(
                    key, job, overrides, passes, id=f"{key}={value!r}"
                )


@pytest.mark.parametrize("key, job, overrides, passes", _boundary_cases())
def test_every_number_is_checked_at_its_bounds(key, job, overrides, passes):
    if passes:
        load_config([], overrides, job)
        return
    with pytest.raises(ValueError) as error:
        load_config([], overrides, job)
    message = str(error.value)
    assert f"Config key '{key}' must be " in message and ", got " in message
    assert "\n" not in message


def _fields(rule_type, kind=str):
    """(key, config class, rule) of each field ruled by `rule_type` that
    may hold a `kind`."""
    for cls, (job, section) in SECTIONS.items():
        for name, rule in RULES[cls.__name__].items():
            if isinstance(rule, rule_type) and kind in _types(cls, name):
                key = f"{section}.{name}"
                yield pytest.param(key, job, rule, id=key)


@pytest.mark.parametrize("key, job, rule", _fields(Interval, float))
def test_numbers_must_be_finite(key, job, rule):
    with pytest.raises(ValueError, match=re.escape(f"'{key}' must be")):
        load_config([], [f"{key}=.nan"], job)


@pytest.mark.parametrize(
    "key, job, rule", [*_fields(Choices, str), *_fields(Choices, tuple)]
)
def test_enumerated_strings_take_only_their_choices(key, job, rule):
    for option in rule.options:
        # A list of primitives needs an op besides "none".
        value = f"[{option}, skip_connect]" if rule.many else option
        if rule.many and option == "skip_connect":
            value = f"[{option}]"
        load_config([], [f"{key}={value}"], job)
    bad = "[skip_connect, bogus]" if rule.many else "bogus"
    with pytest.raises(ValueError, match=re.escape(f"'{key}'")) as error:
        load_config([], [f"{key}={bad}"], job)
    assert "'bogus'" in str(error.value)
    assert str(rule.options) in str(error.value)


@pytest.mark.parametrize(
    "primitives", ["[]", "[none]", "[skip_connect, skip_connect]"]
)
def test_primitives_are_distinct_and_hold_an_op(primitives):
    with pytest.raises(ValueError, match="'model.primitives' must list"):
        load_config([], [f"model.primitives={primitives}"])


def test_choices_match_the_code():
    from snas_tf import data, genotype, resource_cost, strategy
    from snas_tf.latency import penalty
    from snas_tf.models import child_network, snas_supernet
    from snas_tf.trainers import retrain

    search, child = RULES["SearchConfig"], RULES["ChildConfig"]
    assert search["mode"].options == snas_supernet.MODES
    assert search["resource_estimator"].options == resource_cost.ESTIMATORS
    assert search["resource"].options == penalty.RESOURCES
    assert search["derivation_rule"].options == genotype.RULES
    assert RULES["DataConfig"]["augment"].options == data.AUGMENTATIONS
    assert RULES["RuntimeConfig"]["strategy"].options == strategy.STRATEGIES
    assert child["network"].options == child_network.NETWORKS
    assert RULES["TrainConfig"]["lr_schedule"].options == retrain.LR_SCHEDULES


def test_path_values_name_what_they_must(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")
    for key in ("data.data_dir", "data.manual_dir"):
        load_config([], [f"{key}={tmp_path}"])
        load_config([], [f"{key}={tmp_path}/not_yet"])
        with pytest.raises(ValueError, match=f"'{key}': '{a_file}' is a file"):
            load_config([], [f"{key}={a_file}"])
        with pytest.raises(ValueError, match=f"inside '{a_file}'"):
            load_config([], [f"{key}={a_file}/sub"])
    for key in ("search.latency_table", "search.latency_target_config"):
        load_config([], [f"{key}={a_file}"])
        load_config([], [f"{key}={tmp_path}/not_yet.json"])
        with pytest.raises(ValueError, match=f"'{key}': .* is a directory"):
            load_config([], [f"{key}={tmp_path}"])
    load_config([], ["child.genotype=SNAS_mild"], RetrainConfig)
    with pytest.raises(ValueError, match="'child.genotype': .* is a directory"):
        load_config([], [f"child.genotype={tmp_path}/"], RetrainConfig)


def test_a_directory_is_no_config_file(tmp_path):
    with pytest.raises(ValueError, match="is a directory; expected a YAML"):
        load_config([tmp_path])


def test_loading_a_config_imports_no_tensorflow():
    code = (
        "import sys, snas_tf.config; "
        "snas_tf.config.load_config(); "
        "assert 'tensorflow' not in sys.modules, 'tensorflow'; "
        "assert 'keras' not in sys.modules, 'keras'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
