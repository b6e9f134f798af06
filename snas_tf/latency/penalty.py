"""Expected latency of the target network as a SNAS resource penalty.

SNAS §2.4 needs a cost linear in the one-hot Z; a latency table gives one
(`snas_tf.latency.cost.LatencyCosts`): the expected latency of the target
child under op weights w is

    T(w) = constant + sum over cells c, edges e, ops k of w_ek * L[c, e, k]

in microseconds, every cell of a type sharing that type's w. The penalty
is the log of the total, `log max(T, 1)`, not a sum of per-edge logs as
the size/FLOPs/MAC penalty: the network's latency is the sum, and the
gradient of log T, L / T, is the op's share of the whole network's time,
free of the unit (the floor at 1 microsecond never binds: the stem and head
alone take longer). With a target latency T0 the penalty is TuNAS's
absolute reward term |T / T0 - 1| instead (Bender et al. 2020).

The three estimators of `snas_tf.resource_cost` apply unchanged:
`reparametrization` (w = Z, pathwise gradient), `discrete`
(w = softmax(α): T is then the exact expected latency) and
`policy_gradient` (the surrogate penalty(T(Z)) * sum log p(Z), with Z and
the penalty held constant; only its gradient means something).

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §2.4 [P]; Bender et al., "Can weight sharing outperform random
    architecture search?" (TuNAS), CVPR 2020, §3.4.
"""

import keras
from keras import ops

from snas_tf.latency.cost import LatencyCosts
from snas_tf.layers.gumbel_softmax import concrete_log_density
from snas_tf.resource_cost import check_estimator

# What a supernet's resource penalty prices (docs/method.md §4): the log of
# size, FLOPs and MAC per edge, or the target network's latency.
RESOURCES = ("size_flops_mac", "latency")


def latency_resource(resource, latency_costs, latency_target_ms):
    """Checks a supernet's resource arguments; returns its `LatencyCosts`
    (from a `to_config()` dict too), or None for another resource.

    Raises:
        ValueError: for an unknown resource, costs given without
            `resource="latency"` or missing with it, or a target <= 0.
    """
    if resource not in RESOURCES:
        raise ValueError(
            f"Unknown resource {resource!r}. Expected one of {RESOURCES}."
        )
    if isinstance(latency_costs, dict):
        latency_costs = LatencyCosts.from_config(latency_costs)
    if (resource == "latency") != (latency_costs is not None):
        raise ValueError(
            "latency_costs must be given exactly when resource is "
            f"'latency'; got resource={resource!r} and latency_costs="
            f"{'set' if latency_costs is not None else None}."
        )
    if latency_target_ms is not None and not latency_target_ms > 0:
        raise ValueError(
            f"latency_target_ms must be > 0, got {latency_target_ms!r}."
        )
    return latency_costs


def expected_latency_us(weights: dict, tables: dict, constant_us):
    """T(w): the target network's latency under op weights, in µs.

    Args:
        weights: `{cell type: (..., E, K)}` op weights (a sample Z or
            softmax(α)); leading axes (a batch of samples) are kept.
        tables: `{cell type: (n_cells, E, K)}` latencies in µs
            (`LatencyCosts.tables`).
        constant_us: the part no op weight changes.

    Returns:
        Tensor of the weights' leading shape (a scalar for (E, K)),
        float32 or wider.
    """
    total = None
    for cell_type, table in tables.items():
        w = weights[cell_type]
        # float16 cannot hold latencies summed over a network.
        dtype = keras.backend.result_type(ops.dtype(w), "float32")
        summed = ops.sum(ops.convert_to_tensor(table, dtype=dtype), axis=0)
        term = ops.sum(ops.cast(w, dtype) * summed, axis=(-2, -1))
        total = term if total is None else total + term
    return total + constant_us


def latency_objective(total_us, target_us=None):
    """log max(T, 1), or |T / T0 - 1| with a target T0 (both in µs)."""
    if target_us is None:
        return ops.log(ops.maximum(total_us, 1.0))
    return ops.abs(total_us / target_us - 1.0)


def latency_penalty(
    estimator,
    samples: dict,
    logits: dict,
    temperature,
    tables: dict,
    constant_us: float,
    target_us: float | None = None,
    log_z: dict | None = None,
):
    """The latency penalty of the target network (both cell types at once:
    the total latency does not split into per-type terms under a log or an
    absolute value).

    Args:
        estimator: one of `ESTIMATORS`.
        samples: `{cell type: (E, K)}` relaxed samples Z of the forward
            pass (leading axes, a batch of samples, broadcast through).
        logits: `{cell type: (E, K)}` architecture logits (log α), shaped
            as the samples.
        temperature: the Concrete temperature λ (policy_gradient).
        tables: `{cell type: (n_cells, E, K)}` latencies in µs.
        constant_us: the latency no op weight changes.
        target_us: optional target latency (TuNAS's |T/T0 - 1|).
        log_z: `{cell type: (E, K)}` log of the samples computed from
            their noise (`ArchSample.*_log_z`); policy_gradient's density
            reads it (docs/method.md §4).

    Returns:
        Scalar tensor for (E, K) inputs (for policy_gradient a surrogate,
        not a cost).

    Raises:
        ValueError: for an unknown estimator, a non-positive target, or
            policy_gradient without `log_z`.
    """
    check_estimator(estimator, log_z)
    if target_us is not None and not target_us > 0:
        raise ValueError(f"target_us must be > 0, got {target_us!r}.")
    if estimator == "discrete":
        weights = {t: ops.softmax(logits[t], axis=-1) for t in tables}
    elif estimator == "reparametrization":
        weights = {t: samples[t] for t in tables}
    else:
        weights = {t: ops.stop_gradient(samples[t]) for t in tables}
    value = latency_objective(
        expected_latency_us(weights, tables, constant_us), target_us
    )
    if estimator != "policy_gradient":
        return value
    # Score function: the logits are reached only through log p(Z).
    log_p = 0.0
    for t in tables:
        data = ops.stop_gradient(ops.cast(log_z[t], ops.dtype(logits[t])))
        density = concrete_log_density(data, logits[t], temperature)
        log_p += ops.sum(density, axis=-1)
    return ops.cast(ops.stop_gradient(value), ops.dtype(log_p)) * log_p


__all__ = [
    "RESOURCES",
    "expected_latency_us",
    "latency_objective",
    "latency_penalty",
    "latency_resource",
]
