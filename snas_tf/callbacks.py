"""Keras callbacks: temperature annealing and monitoring of the search,
the drop-path schedule of the retraining.

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §2.2 (temperature), §3.1 (search metrics) and §3.2 (retraining).
"""

import numbers

import keras
import numpy as np

from snas_tf import resource_cost
from snas_tf.collapse import count_weightless
from snas_tf.config import SearchConfig
from snas_tf.genotype import derive_genotype
from snas_tf.layers import gumbel_softmax
from snas_tf.layers.drop_path import DropPath
from snas_tf.schedules import temperature_at


class TemperatureScheduler(keras.callbacks.Callback):
    """Sets the supernet's temperature λ at the start of every epoch.

    The reference code steps λ at the start of each epoch; the compiled
    step reads the model's `temperature` variable, so no retracing happens.

    Args:
        epochs: epochs of the whole search (the schedule's span; a resumed
            run passes the same value and `initial_epoch`).
        initial: λ at the first epoch.
        final: λ at the last epoch.
        schedule: `"linear"` (reference) or `"exponential"`.
    """

    def __init__(
        self,
        epochs,
        initial=SearchConfig.temperature_initial,
        final=SearchConfig.temperature_final,
        schedule=SearchConfig.temperature_schedule,
    ):
        super().__init__()
        # Validates the arguments once, before training starts.
        temperature_at(0, epochs, initial, final, schedule)
        self.epochs = epochs
        self.initial = initial
        self.final = final
        self.schedule = schedule

    def on_epoch_begin(self, epoch, logs=None):
        self.model.temperature.assign(
            temperature_at(
                epoch, self.epochs, self.initial, self.final, self.schedule
            )
        )


class SearchMonitor(keras.callbacks.Callback):
    """Adds the architecture's per-epoch state to the logs.

    Numeric entries land in `logs` (so in the History, progress bar of the
    next epoch and TensorBoard): `temperature`, `entropy_normal`,
    `entropy_reduce` (mean over edges of the entropy of softmax(α), in nats;
    log(num_ops) is uniform), and `expected_size`, `expected_flops`,
    `expected_mac` (expected cost of all cells under softmax(α)),
    `expected_latency_ms` (with a latency penalty: the target network's
    expected latency under softmax(α), `snas_tf.latency.cost`),
    `weightless_normal` and `weightless_reduce` (edges of the derived cells
    whose op holds no weights: `count_weightless`). The derived
    genotype is not a number: it is kept, per epoch, in `self.genotypes`
    (compact strings) and `self.records`, with `alpha_normal` and
    `alpha_reduce`: softmax(α) per edge, as nested lists [edge][op] in the
    order of `model.search_space` (for the heatmaps of `snas plot`).

    Args:
        rule: genotype derivation rule, `"edge_all"` (SNAS) or `"top2"`.
    """

    def __init__(self, rule="edge_all"):
        super().__init__()
        self.rule = rule
        self.genotypes = []
        self.records = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        model = self.model
        logits = {
            t: keras.ops.convert_to_numpy(model.arch_logits(t))
            for t in ("normal", "reduce")
        }
        logs["temperature"] = float(
            keras.ops.convert_to_numpy(model.temperature)
        )
        for t, value in logits.items():
            entropy = gumbel_softmax.entropy(value)
            logs[f"entropy_{t}"] = float(keras.ops.mean(entropy))
        costs = np.zeros(3)
        for t, tables in (model.cost_tables or {}).items():
            probs = keras.ops.softmax(logits[t], axis=-1)
            for table in tables:
                costs += keras.ops.convert_to_numpy(
                    resource_cost.expected_costs(probs, table)
                )
        for name, value in zip(resource_cost.COST_NAMES, costs, strict=True):
            logs[f"expected_{name}"] = float(value)
        latency = getattr(model, "latency_costs", None)
        if latency is not None:
            # The target network's latency under softmax(α) (µs -> ms).
            probs = {
                t: keras.ops.convert_to_numpy(keras.ops.softmax(v, axis=-1))
                for t, v in logits.items()
            }
            logs["expected_latency_ms"] = latency.expected_us(probs) / 1e3
        genotype = derive_genotype(
            logits["normal"], logits["reduce"], self.rule, model.search_space
        )
        for t in logits:
            logs[f"weightless_{t}"] = count_weightless(genotype, t, self.rule)
        self.genotypes.append(genotype.to_string())
        alphas = {
            f"alpha_{t}": keras.ops.convert_to_numpy(
                keras.ops.softmax(value, axis=-1)
            ).tolist()
            for t, value in logits.items()
        }
        self.records.append(
            {
                "epoch": epoch,
                "genotype": genotype.to_string(),
                **logs,
                **alphas,
            }
        )


def _drop_path_layers(model):
    """The `DropPath` layers of `model` and of the models nested in it."""
    found = []
    for layer in model.layers:
        if isinstance(layer, DropPath):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(_drop_path_layers(layer))
    return found


class DropPathScheduler(keras.callbacks.Callback):
    """Ramps the drop-path rate linearly over the retraining.

    At the start of epoch `e` (0-based) every `DropPath` layer of the model
    gets the rate `drop_path_prob * e / epochs`, as DARTS's and SNAS's
    train.py set `model.drop_path_prob`. The compiled step reads the
    layers' `rate` variables, so no retracing happens.

    Args:
        drop_path_prob: the rate the ramp heads for, in [0, 1) (0.2 in the
            paper's CIFAR-10 retraining).
        epochs: epochs of the whole retraining (the ramp's span; a resumed
            run passes the same value and `initial_epoch`).

    Raises:
        ValueError: for a rate outside [0, 1) or `epochs` < 1; at the first
            epoch, if `drop_path_prob` > 0 and the model has no `DropPath`
            layer (build it with `drop_path=True`).

    Reference:
        Xie et al., "SNAS: Stochastic Neural Architecture Search",
        ICLR 2019, §3.2 [C train.py].
    """

    def __init__(self, drop_path_prob, epochs):
        super().__init__()
        if isinstance(drop_path_prob, bool) or not (
            isinstance(drop_path_prob, numbers.Real)
            and 0.0 <= drop_path_prob < 1.0
        ):
            raise ValueError(
                f"drop_path_prob must be a number in [0, 1), got "
                f"{drop_path_prob!r}."
            )
        if (
            isinstance(epochs, bool)
            or not isinstance(epochs, numbers.Integral)
            or epochs < 1
        ):
            raise ValueError(f"epochs must be an int >= 1, got {epochs!r}.")
        self.drop_path_prob = float(drop_path_prob)
        self.epochs = int(epochs)

    def rate_at(self, epoch) -> float:
        """The drop-path rate of epoch `epoch` (0-based)."""
        return self.drop_path_prob * epoch / self.epochs

    def on_epoch_begin(self, epoch, logs=None):
        layers = _drop_path_layers(self.model)
        if not layers and self.drop_path_prob > 0:
            raise ValueError(
                f"drop_path_prob={self.drop_path_prob} but model "
                f"{self.model.name!r} has no DropPath layer; build it with "
                "build_child_network(..., drop_path=True)."
            )
        rate = self.rate_at(epoch)
        for layer in layers:
            layer.rate.assign(rate)
