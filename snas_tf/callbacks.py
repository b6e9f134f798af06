"""Keras callbacks of the search: temperature annealing and monitoring.

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §2.2 (temperature) and §3.1 (search metrics).
"""

import keras
import numpy as np

from snas_tf import resource_cost
from snas_tf.genotype import derive_genotype
from snas_tf.layers import gumbel_softmax
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

    def __init__(self, epochs, initial=1.0, final=0.03, schedule="linear"):
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
    `expected_mac` (expected cost of all cells under softmax(α)). The derived
    genotype is not a number: it is kept, per epoch, in `self.genotypes`
    (compact strings) and `self.records`.

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
        genotype = derive_genotype(
            logits["normal"], logits["reduce"], self.rule, model.search_space
        )
        self.genotypes.append(genotype.to_string())
        self.records.append(
            {"epoch": epoch, "genotype": genotype.to_string(), **logs}
        )
