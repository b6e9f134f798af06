"""The valid values of every config key, checked when a config loads.

One table per dataclass of `snas_tf.config`, in field order: the interval
of each number, the choices of each enumerated string, what a path must
name; a boolean needs no entry. Each range follows from how the code uses
the value (the comments say how where it is not plain). `check_config`
applies them before TensorFlow is imported, so a bad value fails with one
line naming its key, the value and the valid range, instead of a C++ abort
or a Keras message that names no key. Imports no TensorFlow.
"""

import dataclasses
import math
import os

from snas_tf.schedules import TEMPERATURE_SCHEDULES
from snas_tf.search_space import PRIMITIVES


@dataclasses.dataclass(frozen=True)
class Interval:
    """Finite numbers from `low` to `high`, an open end excluding its bound.
    `high` may name another field of the same section, whose value is then
    the bound; `even` allows only even ints. An optional or boolean field
    is only checked when it holds a number."""

    low: float = -math.inf
    high: float | str = math.inf
    low_open: bool = False
    high_open: bool = False
    even: bool = False

    def check(self, value, key, section) -> None:
        if value is None or isinstance(value, bool):
            return
        high, high_text = self.high, self.high
        if isinstance(high, str):
            high = getattr(section, high)
            high_text = f"{key.rsplit('.', 1)[0]}.{self.high} = {high!r}"
        finite = isinstance(value, int) or math.isfinite(value)
        low_ok = value > self.low if self.low_open else value >= self.low
        high_ok = value < high if self.high_open else value <= high
        if finite and low_ok and high_ok and not (self.even and value % 2):
            return
        if high == math.inf:
            bounds = f"{'>' if self.low_open else '>='} {self.low:g}"
        else:
            bounds = (
                f"in {'(' if self.low_open else '['}{self.low:g}, "
                f"{high_text}{')' if self.high_open else ']'}"
            )
        kind = "an even int " if self.even else ""
        if not finite:
            kind = "a finite number "
        raise ValueError(
            f"Config key {key!r} must be {kind}{bounds}, got {value!r}."
        )


def at_least(low, **kwargs) -> Interval:
    return Interval(low, **kwargs)


def above(low, **kwargs) -> Interval:
    return Interval(low, low_open=True, **kwargs)


# Probabilities, momenta and Adam betas: 1 would never forget (or always
# drop), so it is excluded.
UNIT = Interval(0, 1, high_open=True)


@dataclasses.dataclass(frozen=True)
class Choices:
    """One of `options`; with `many`, a list of distinct options holding
    at least one of `needed`. The null of an optional field (its
    documented default) is not checked."""

    options: tuple
    many: bool = False
    needed: tuple = ()

    def check(self, value, key, section) -> None:
        if value is None:
            return
        if not self.many:
            if value not in self.options:
                raise ValueError(
                    f"Config key {key!r} must be one of {self.options}, got "
                    f"{value!r}."
                )
            return
        for name in value:
            if name not in self.options:
                raise ValueError(
                    f"Config key {key!r} lists {name!r}; valid names: "
                    f"{self.options}."
                )
        if len(set(value)) != len(value) or not set(value) & set(self.needed):
            raise ValueError(
                f"Config key {key!r} must list distinct names, one or more "
                f"of them from {self.needed}, got {list(value)!r}."
            )


def path_problem(path, directory: bool) -> str | None:
    """Why `path` (`~` expanded) cannot be what is asked, or None: with
    `directory`, an existing directory or a missing path (created or
    reported later, where it is used) under a directory; without, anything
    but a directory. The text names the path and what it is."""
    full = os.path.expanduser(os.fspath(path))
    if os.path.exists(full):
        if directory and not os.path.isdir(full):
            return f"{str(path)!r} is a file; expected a directory"
        if not directory and os.path.isdir(full):
            return f"{str(path)!r} is a directory; expected a file"
        return None
    parent = os.path.dirname(os.path.abspath(full))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"{str(path)!r} is inside {parent!r}, which is a file"
    return None


@dataclasses.dataclass(frozen=True)
class Path:
    """A path to a directory (`path_problem`); null means the default."""

    def check(self, value, key, section) -> None:
        problem = value is not None and path_problem(value, directory=True)
        if problem:
            raise ValueError(f"Config key {key!r}: {problem}.")


@dataclasses.dataclass(frozen=True)
class File:
    """A path to a file (`path_problem`): not a directory; null means
    none. Whether it exists is checked where it is read."""

    def check(self, value, key, section) -> None:
        problem = value is not None and path_problem(value, directory=False)
        if problem:
            raise ValueError(f"Config key {key!r}: {problem}.")


@dataclasses.dataclass(frozen=True)
class Genotype:
    """A registry name, a JSON or compact string, or the path of a
    genotype.json: a value that looks like a path (a '/' in it, or a
    '.json' end) must not name a directory. The rest is checked when the
    genotype is read."""

    def check(self, value, key, section) -> None:
        if "/" in value or value.endswith(".json"):
            problem = path_problem(value, directory=False)
            if problem:
                raise ValueError(f"Config key {key!r}: {problem}.")


@dataclasses.dataclass(frozen=True)
class Text:
    """Any string: `why` says where it is checked instead."""

    why: str

    def check(self, value, key, section) -> None:
        pass


MODEL = {
    # The supernet doubles C at each reduction before a FactorizedReduce
    # halves it, so any C builds.
    "channels": at_least(1),
    "num_cells": at_least(1),
    "num_nodes": at_least(1),
    # Derivation needs an op besides "none" on every edge.
    "primitives": Choices(
        PRIMITIVES,
        many=True,
        needed=tuple(p for p in PRIMITIVES if p != "none"),
    ),
    "stem_multiplier": at_least(1),
    "recompute": at_least(0, high="num_cells"),
}
SEARCH = {
    "epochs": at_least(1),
    "batch_size": at_least(1),
    "mode": Choices(("snas", "darts", "darts_single_level")),
    "resource_estimator": Choices(
        ("reparametrization", "discrete", "policy_gradient")
    ),
    "resource": Choices(("size_flops_mac", "latency")),
    # Read and checked against each other when the search starts
    # (snas_tf.latency.cost.search_latency_costs).
    "latency_table": File(),
    "latency_target_config": File(),
    "latency_target_ms": above(0),
    "penalty_strength": at_least(0),
    # λ anneals: it ends at or below where it starts, and stays > 0 (the
    # Gumbel softmax divides by it).
    "temperature_initial": above(0),
    "temperature_final": above(0, high="temperature_initial"),
    "temperature_schedule": Choices(TEMPERATURE_SCHEDULES),
    "learning_rate": above(0),
    # The cosine decay's floor: alpha = learning_rate_min / learning_rate.
    "learning_rate_min": at_least(0, high="learning_rate"),
    "momentum": UNIT,
    "weight_decay": at_least(0),
    "clipnorm": at_least(0),  # 0: no clipping
    "arch_learning_rate": above(0),
    "arch_beta_1": UNIT,
    "arch_beta_2": UNIT,
    "arch_weight_decay": at_least(0),
    "arch_clipnorm": at_least(0),  # 0: no clipping
    "derivation_rule": Choices(("edge_all", "top2")),
    # A share of the training split: both parts must hold examples.
    "arch_fraction": Interval(0, 1, low_open=True, high_open=True),
    "drop_path_prob": UNIT,
}
DATA = {
    "dataset": Text("the data loader knows the TFDS names"),
    "data_dir": Path(),
    "manual_dir": Path(),
    "image_size": at_least(1),
    # A share of the training split: both parts must hold examples.
    "validation_fraction": Interval(0, 1, low_open=True, high_open=True),
    "eval_split": Text("TFDS checks split names when it reads them"),
    "max_examples": at_least(1),  # null: every example
    "augment": Choices(("auto", "cifar", "imagenet", "none")),
    # 0: off; a larger square than the image blanks it (clipped at borders).
    "cutout": at_least(0),
    "max_image_pixels": at_least(1),
    "oversize_images": Choices(("fail", "skip")),
}
RUNTIME = {
    "strategy": Choices(
        ("default", "one_device", "mirrored", "multi_worker_mirrored")
    ),
    # NumPy's seed range (keras.utils.set_random_seed seeds NumPy).
    "seed": Interval(0, 2**32 - 1),
    "intra_op_threads": at_least(0),  # 0: TensorFlow's default
    "inter_op_threads": at_least(0),
    "verbose": Interval(0, 2),
    "checkpoint_steps": at_least(0),  # 0: at epoch ends only
}
CHILD = {
    "genotype": Genotype(),
    "network": Choices(("cifar", "imagenet")),
    # FactorizedReduce and the ImageNet stem split C in halves.
    "channels": at_least(2, even=True),
    "num_layers": at_least(1),
}
TRAIN = {
    "epochs": at_least(1),
    "batch_size": at_least(1),
    "learning_rate": above(0),
    "lr_schedule": Choices(("cosine", "exponential")),
    "learning_rate_min": at_least(0, high="learning_rate"),
    # A per-epoch factor: 1 keeps the rate, more would grow it.
    "lr_decay": Interval(0, 1, low_open=True),
    "momentum": UNIT,
    "weight_decay": at_least(0),
    "clipnorm": at_least(0),  # 0: no clipping
    "label_smoothing": UNIT,
    "auxiliary_weight": at_least(0),
    "drop_path_prob": UNIT,
}

# Section dataclass name -> its table.
RULES = {
    "ModelConfig": MODEL,
    "SearchConfig": SEARCH,
    "DataConfig": DATA,
    "RuntimeConfig": RUNTIME,
    "ChildConfig": CHILD,
    "TrainConfig": TRAIN,
}


def check_config(config, prefix="") -> None:
    """Checks every value of `config` (a config dataclass) against its
    table, field by field in order, so a field bounded by another is
    checked after it; raises ValueError naming the first bad one."""
    rules = RULES.get(type(config).__name__, {})
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        key = prefix + field.name
        if dataclasses.is_dataclass(value):
            check_config(value, key + ".")
        elif field.name in rules:
            rules[field.name].check(value, key, config)
