"""Starting or resuming a `snas tune` directory.

`config.yaml` (the base search config) and `tune.yaml` (algorithm,
budgets, ranges, retraining size) record a tuning's settings; running again
on the same directory resumes it only when they match.
"""

import dataclasses
import os

import yaml

from snas_tf.config import (
    Config,
    config_to_dict,
    load_config,
    save_config,
    write_atomic,
)

# Keys of tune.yaml a resumed tuning must match (max_trials may grow).
TUNE_KEYS = ("algorithm", "max_params", "max_madds", "hyperparameters", "child")


def _comparable(config: Config) -> dict:
    # Progress output does not change a trial's result.
    runtime = dataclasses.replace(config.runtime, verbose=0)
    return config_to_dict(dataclasses.replace(config, runtime=runtime))


def start_or_resume(model_dir, config: Config, settings: dict) -> None:
    """Writes config.yaml and tune.yaml, or checks that those of a started
    tuning match (then keras-tuner resumes it).

    Raises:
        ValueError: if `model_dir` holds a tuning with other settings.
    """
    config_path = os.path.join(model_dir, "config.yaml")
    tune_path = os.path.join(model_dir, "tune.yaml")
    if not os.path.isfile(tune_path):
        save_config(config, config_path)
        # tune.yaml last: it marks a started tuning.
        write_atomic(tune_path, yaml.safe_dump(settings, sort_keys=False))
        return
    with open(tune_path, encoding="utf-8") as f:
        saved = yaml.safe_load(f) or {}
    current = yaml.safe_load(yaml.safe_dump(settings))
    differ = [k for k in TUNE_KEYS if saved.get(k) != current.get(k)]
    if _comparable(load_config([config_path])) != _comparable(config):
        differ.append("search config")
    if differ:
        raise ValueError(
            f"{str(model_dir)!r} holds a tuning with other {differ}; run "
            "with the same settings to resume it, or use a new --model-dir."
        )
