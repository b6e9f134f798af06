"""Search configuration: frozen dataclasses loaded from strict YAML.

Order of precedence: defaults -> YAML files (in order) -> `key=value`
overrides. Loading is strict: an unknown key, a value of the wrong type or
outside its valid range (`snas_tf.config_checks`, which holds the range of
every key) is an error that names the key, the value and the valid choices.
Imports no TensorFlow, so a bad config fails fast.
"""

import dataclasses
import os
import types
import typing

import yaml

from snas_tf.atomic_files import write_atomic
from snas_tf.config_checks import check_config
from snas_tf.search_space import PRIMITIVES


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The search supernet.

    Attributes:
        channels: C, channels of the first cells (paper: 16).
        num_cells: L cells, reductions at L//3 and 2L//3 (paper: 8).
        num_nodes: intermediate nodes per cell.
        primitives: candidate operations, in logit-column order.
        stem_multiplier: stem channels = stem_multiplier * C.
        recompute: recompute each cell's op outputs in the backward pass
            instead of keeping them (less memory, a slower step): true for
            every cell, a number N for the first N cells (the ones that
            hold the most memory).
    """

    channels: int = 16
    num_cells: int = 8
    num_nodes: int = 4
    primitives: tuple = PRIMITIVES
    stem_multiplier: int = 3
    recompute: bool | int = False


# What `search.mode` changes when `search.penalty_strength`,
# `search.derivation_rule` or `search.drop_path_prob` is null: SNAS's
# constraint, rule and edge drop-path (the authors' code) for "snas" and
# for "darts_single_level" (SNAS's loop without the noise: an ablation),
# DARTS's (no resource penalty, two edges per node, no drop-path) for the
# bi-level "darts" (docs/method.md §3).
MODE_DEFAULTS = {
    "snas": {
        "penalty_strength": 1.5e-3,
        "derivation_rule": "edge_all",
        "drop_path_prob": 0.3,
    },
    "darts": {
        "penalty_strength": 0.0,
        "derivation_rule": "top2",
        "drop_path_prob": 0.0,
    },
    "darts_single_level": {
        "penalty_strength": 1.5e-3,
        "derivation_rule": "edge_all",
        "drop_path_prob": 0.3,
    },
}


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """The search procedure (docs/method.md §2-4 defaults).

    Attributes:
        epochs: search epochs (paper: 150).
        batch_size: global batch size (paper: 64).
        mode: "snas" (Gumbel noise, θ and α from one loss on one batch),
            "darts" (first-order bi-level DARTS: softmax mixing, no noise,
            α from batches of the architecture split, θ from the rest)
            or "darts_single_level" (SNAS's one-batch step with the
            softmax mixing of DARTS).
        resource_estimator: reparametrization | discrete | policy_gradient.
        resource: what the penalty prices: "size_flops_mac" (the log of
            parameters, FLOPs and MAC per edge, SNAS's) or "latency" (the
            log of the target network's expected latency from
            `latency_table`; docs/method.md §4).
        latency_table: with resource "latency", a table of
            `snas latency-table` (microseconds) for the target network.
        latency_target_config: with resource "latency", the retrain config
            of the target network (the child that will ship: its cells,
            channels and image size, not the search network's); the table
            must have been built for it.
        latency_target_ms: with resource "latency", an optional target
            latency T0 in ms: the penalty is |T / T0 - 1| (TuNAS) instead
            of log T.
        penalty_strength: η of the resource penalty (0 disables it; null:
            the mode's, `MODE_DEFAULTS`).
        temperature_initial: λ at the first epoch.
        temperature_final: λ at the last epoch.
        temperature_schedule: "linear" or "exponential".
        learning_rate: SGD learning rate of θ, cosine-decayed to
            `learning_rate_min`.
        learning_rate_min: final learning rate of θ.
        momentum: SGD momentum of θ.
        weight_decay: coupled L2 on θ.
        clipnorm: global-norm clip of θ's gradient.
        arch_learning_rate: Adam learning rate of α.
        arch_beta_1: Adam β1 of α.
        arch_beta_2: Adam β2 of α.
        arch_weight_decay: coupled L2 on α.
        arch_clipnorm: global-norm clip of α's gradient.
        derivation_rule: "edge_all" (SNAS) or "top2" (DARTS); null: the
            mode's (`MODE_DEFAULTS`). Also the rule of the child accuracy
            without retraining.
        arch_fraction: in "darts" mode, the share of the training
            examples (those left after the validation split) that train
            α and only α; the others train θ.
        mixed_precision: compute the network in bfloat16 with float32
            variables and α ("mixed_bfloat16": no loss scaling, so the
            global clip stays exact); for GPUs and CPUs with bfloat16 units.
        drop_path_prob: probability with which each mixed-edge output of
            each training example is zeroed (the rest scaled by 1 / (1 -
            p)), constant over the search, as the authors' code does
            (0.3); null: the mode's (`MODE_DEFAULTS`).
    """

    epochs: int = 150
    batch_size: int = 64
    mode: str = "snas"
    resource_estimator: str = "reparametrization"
    resource: str = "size_flops_mac"
    latency_table: str | None = None
    latency_target_config: str | None = None
    latency_target_ms: float | None = None
    penalty_strength: float | None = None
    temperature_initial: float = 1.0
    temperature_final: float = 0.03
    temperature_schedule: str = "linear"
    learning_rate: float = 0.025
    learning_rate_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    clipnorm: float = 5.0
    arch_learning_rate: float = 3e-4
    arch_beta_1: float = 0.5
    arch_beta_2: float = 0.999
    arch_weight_decay: float = 1e-3
    arch_clipnorm: float = 10.0
    derivation_rule: str | None = None
    arch_fraction: float = 0.5
    mixed_precision: bool = False
    drop_path_prob: float | None = None

    @property
    def resolved_penalty_strength(self) -> float:
        """`penalty_strength`, or the mode's when null."""
        if self.penalty_strength is not None:
            return self.penalty_strength
        return MODE_DEFAULTS[self.mode]["penalty_strength"]

    @property
    def resolved_derivation_rule(self) -> str:
        """`derivation_rule`, or the mode's when null."""
        if self.derivation_rule is not None:
            return self.derivation_rule
        return MODE_DEFAULTS[self.mode]["derivation_rule"]

    @property
    def resolved_drop_path_prob(self) -> float:
        """`drop_path_prob`, or the mode's when null."""
        if self.drop_path_prob is not None:
            return self.drop_path_prob
        return MODE_DEFAULTS[self.mode]["drop_path_prob"]


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The data set and its pipeline (`snas_tf.data`).

    Attributes:
        dataset: "digits" (scikit-learn's bundled 8x8 digits),
            "image_folder" (data_dir/<split>/<label>/<images>) or a TFDS
            image-classification name such as "cifar10" or "imagenet2012".
        data_dir: TFDS data directory (None: TFDS default), or the root of
            the image folder.
        manual_dir: folder of a manual download (imagenet2012's tar files).
        image_size: side of the square images the network sees.
        validation_fraction: share of the training split held out to
            validate the search (never the test split).
        eval_split: split to validate on instead (None: carve for the
            search; the test split, or imagenet2012's validation split, for
            the retraining).
        max_examples: cap on the examples read per split (None: all).
        augment: "auto" (imagenet for imagenet2012, else cifar), "cifar"
            (pad, random crop, flip), "imagenet" (random resized crop, flip,
            colour jitter) or "none".
        cutout: side of the cutout square (0: off; paper retrain: 16).
        max_image_pixels: an image-folder file whose header declares more
            pixels (width x height) is never decoded: a small compressed
            file can declare a size that takes gigabytes to decode.
        oversize_images: what an image folder's oversize file does:
            "fail" (an error naming its path) or "skip" (left out, with a
            warning counting the skipped files).
    """

    dataset: str = "cifar10"
    data_dir: str | None = None
    manual_dir: str | None = None
    image_size: int = 32
    validation_fraction: float = 0.1
    eval_split: str | None = None
    max_examples: int | None = None
    augment: str = "auto"
    cutout: int = 0
    max_image_pixels: int = 4096 * 4096
    oversize_images: str = "fail"


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """How the job runs.

    Attributes:
        strategy: default | one_device | mirrored | multi_worker_mirrored.
        seed: seed of the data order, the α initialisation and the noise.
        jit_compile: XLA; off by default (on CPU it is far slower here).
        intra_op_threads: TF intra-op threads (0: TF default).
        inter_op_threads: TF inter-op threads (0: TF default).
        verbose: Keras progress output (0 silent, 1 bar, 2 line per epoch).
        deterministic: TF op determinism (`enable_op_determinism`), so a
            resumed run ends with the same weights as an uninterrupted one;
            some ops get slower.
        checkpoint_steps: also checkpoint every this many steps within an
            epoch (0: at epoch ends only); a killed job run again with the
            same command resumes from the newest checkpoint.
        grappler: TF's graph optimiser (Grappler): true, false, or null
            (default): off for a search on a machine without a GPU, where
            it lengthens the first step and not shortens the others; on
            otherwise (retraining, and GPUs, where its layout optimiser
            matters). Figures in `benchmarks/README.md`.
        fast_kernels: build the search supernet from `snas_tf.kernels`'
            faster stand-ins of the Keras layers (same math); false builds
            it from plain Keras layers (slower; for checking, and for
            TensorFlow builds where a stand-in misbehaves).
    """

    strategy: str = "default"
    seed: int = 0
    jit_compile: bool = False
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    verbose: int = 1
    deterministic: bool = False
    checkpoint_steps: int = 100
    grappler: bool | None = None
    fast_kernels: bool = True


@dataclasses.dataclass(frozen=True)
class Config:
    """A whole search job.

    Attributes:
        model: the supernet.
        search: the search procedure.
        data: the data set.
        runtime: devices, seeds, threads.
    """

    model: ModelConfig = ModelConfig()
    search: SearchConfig = SearchConfig()
    data: DataConfig = DataConfig()
    runtime: RuntimeConfig = RuntimeConfig()


@dataclasses.dataclass(frozen=True)
class ChildConfig:
    """The retrained child network (`build_child_network`).

    Attributes:
        genotype: a `GENOTYPES` name, a JSON or compact string, or a path
            to a genotype.json (e.g. a search's output).
        network: "cifar" or "imagenet" (the mobile setting).
        channels: C of the first cells (CIFAR 36, ImageNet mobile 48).
        num_layers: cells L (CIFAR 20, ImageNet 14).
        auxiliary: train with the auxiliary head after cell 2L//3.
    """

    genotype: str = "SNAS_moderate"
    network: str = "cifar"
    channels: int = 36
    num_layers: int = 20
    auxiliary: bool = True


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The retraining procedure (docs/method.md §6; defaults: CIFAR-10).

    Attributes:
        epochs: training epochs (CIFAR 600, ImageNet 250).
        batch_size: global batch size (CIFAR 96, ImageNet 128).
        learning_rate: initial SGD learning rate (CIFAR 0.025, ImageNet 0.1).
        lr_schedule: "cosine" (to `learning_rate_min` over training) or
            "exponential" (x `lr_decay` per epoch, ImageNet).
        learning_rate_min: final learning rate of the cosine schedule.
        lr_decay: per-epoch factor of the exponential schedule.
        momentum: SGD momentum.
        weight_decay: coupled L2, as the reference's PyTorch SGD (CIFAR
            3e-4, ImageNet 3e-5).
        clipnorm: global-norm clip of the gradient of the global batch.
        label_smoothing: label smoothing of the cross-entropy (ImageNet 0.1).
        auxiliary_weight: weight of the auxiliary head's loss.
        drop_path_prob: final drop-path probability, ramped linearly from 0
            over training (CIFAR 0.2).
        mixed_precision: compute in bfloat16 with float32 variables
            ("mixed_bfloat16": no loss scaling, so clipping stays exact).
        sync_batch_norm: with several replicas, BatchNorm uses the global
            batch's statistics, so multi-device training computes what one
            device would (the reference trains on one GPU); off: per-replica
            statistics, without the extra all-reduce per layer.
    """

    epochs: int = 600
    batch_size: int = 96
    learning_rate: float = 0.025
    lr_schedule: str = "cosine"
    learning_rate_min: float = 0.0
    lr_decay: float = 0.97
    momentum: float = 0.9
    weight_decay: float = 3e-4
    clipnorm: float = 5.0
    label_smoothing: float = 0.0
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.2
    mixed_precision: bool = False
    sync_batch_norm: bool = True


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
    """A whole retraining job.

    Attributes:
        child: the child network.
        train: the training procedure.
        data: the data set.
        runtime: devices, seeds, threads.
    """

    child: ChildConfig = ChildConfig()
    train: TrainConfig = TrainConfig()
    data: DataConfig = DataConfig(cutout=16)
    runtime: RuntimeConfig = RuntimeConfig()

    def child_kwargs(self, num_classes: int) -> dict:
        """`build_child_network` arguments (besides genotype, auxiliary
        head and drop-path) of this job's child network."""
        return dict(
            network=self.child.network,
            num_classes=num_classes,
            channels=self.child.channels,
            num_layers=self.child.num_layers,
            image_size=self.data.image_size,
        )


def _check_value(value, annotation, key):
    """Returns `value` converted to `annotation`, or raises naming `key`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            try:
                return _check_value(value, option, key)
            except ValueError:
                pass
        names = ("null" if a is type(None) else a.__name__ for a in options)
        raise _type_error(key, " or ".join(names), value)
    # bool is an int subclass, but True is no valid int or float here.
    is_bool = isinstance(value, bool)
    if annotation is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    if annotation is float and isinstance(value, int) and not is_bool:
        return float(value)
    if annotation is float and isinstance(value, str):
        # YAML 1.1 reads "3e-4" (no dot) as a string.
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, annotation) and (annotation is bool or not is_bool):
        return value
    raise _type_error(key, getattr(annotation, "__name__", annotation), value)


def _type_error(key, expected, value):
    return ValueError(
        f"Config key {key!r} expects {expected}, got {value!r} "
        f"({type(value).__name__})."
    )


def _build(base, data, prefix=""):
    """`base` (a dataclass instance) with the keys of `data` replaced."""
    cls = type(base)
    if not isinstance(data, dict):
        raise ValueError(
            f"Config section {prefix.rstrip('.') or 'root'!r} must be a "
            f"mapping, got {data!r}."
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ValueError(
                f"Unknown config key {prefix + str(key)!r}. Valid keys: "
                f"{sorted(prefix + k for k in fields)}."
            )
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(getattr(base, key), value, f"{prefix}{key}.")
        else:
            kwargs[key] = _check_value(value, hint, prefix + key)
    return dataclasses.replace(base, **kwargs)


def _yaml_problem(error) -> str:
    """A YAML error on one line (PyYAML's spans several, with snippets)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(error).split())


def _merge(base, update):
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _override_to_dict(text):
    if "=" not in text:
        raise ValueError(
            f"Override {text!r} must look like section.key=value, e.g. "
            "search.epochs=10."
        )
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ValueError(
            f"Override {text!r}: the value is not valid YAML: "
            f"{_yaml_problem(e)}."
        ) from e
    out = value
    for part in reversed(key.strip().split(".")):
        out = {part: out}
    return out


def load_config(paths=(), overrides=(), config_class=Config):
    """Builds a config from defaults, YAML files and overrides.

    Args:
        paths: YAML files, merged in order.
        overrides: strings like `"search.epochs=10"` (values parsed as YAML).
        config_class: `Config` (a search) or `RetrainConfig`.

    Returns:
        The frozen `config_class` instance.

    Raises:
        ValueError: for a missing file, invalid YAML, an unknown key or a
            value of the wrong type or out of its range (the message names
            it).
    """
    data = {}
    for path in paths:
        if os.path.isdir(path):
            raise ValueError(
                f"Config file {str(path)!r} is a directory; expected a YAML "
                "file."
            )
        if not os.path.isfile(path):
            raise ValueError(f"Config file {str(path)!r} does not exist.")
        with open(path) as f:
            try:
                loaded = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                raise ValueError(
                    f"Invalid YAML in {str(path)!r}: {_yaml_problem(e)}"
                ) from e
        if not isinstance(loaded, dict):
            raise ValueError(
                f"Config file {str(path)!r} must hold a mapping, got "
                f"{type(loaded).__name__}."
            )
        data = _merge(data, loaded)
    for text in overrides:
        data = _merge(data, _override_to_dict(text))
    config = _build(config_class(), data)
    check_config(config)
    return config


def config_to_dict(config) -> dict:
    """The config as plain YAML-able data (tuples become lists)."""

    def plain(value):
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def save_config(config: Config, path) -> None:
    """Writes the resolved config as YAML, atomically."""
    write_atomic(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
