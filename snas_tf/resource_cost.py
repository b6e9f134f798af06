"""Resource cost of a cell and the three SNAS estimators of its expectation.

SNAS adds a resource penalty to the search loss so that the architecture
distribution is pushed towards cheap cells (SNAS §2.4, Appendix F). Every
candidate op of an edge has a static cost: parameter count ("size"), FLOPs
and memory access cost ("MAC"). The cost of an edge under a weight vector w
over its ops is linear in w (SNAS §2.4: the cost is linear in Z), and the
log penalty of the edge is

    (log S_e + log F_e + log M_e) / 3,   S_e = sum_k w_k size_k, ...

with every one of S, F, M below 1 replaced by 1. The penalty of one cell
type sums that over the edges and averages over the cells of that type.

The expectation of the cost over the architecture distribution is estimated
in one of three ways (`ESTIMATORS`):

- ``reparametrization``: w = the relaxed sample Z of the forward pass; the
  gradient flows through Z (pathwise, the reference code's default).
- ``discrete``: w = softmax(logits), the exact expectation weights under the
  categorical distribution.
- ``policy_gradient``: a surrogate whose gradient with respect to the logits
  is the score-function (REINFORCE) estimate of the gradient of E_Z[cost(Z)].

The per-op cost table follows the reference code's `operations.py`
(`size`, `flops`, `mac` attributes) with C channels in and out; see
`op_cost`. Static tables are numpy arrays built once; the penalties use
`keras.ops` so they run inside a compiled train step.

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §2.4 and Appendix F; authors' code SNAS-Series/SNAS
    (`operations.py`, `model_search.py`).
"""

import math
from collections.abc import Sequence
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from snas_tf.layers.gumbel_softmax import concrete_log_density
from snas_tf.search_space import SearchSpace, check_primitive

ESTIMATORS = ("reparametrization", "discrete", "policy_gradient")

# Order of the last axis of a cost table.
COST_NAMES = ("size", "flops", "mac")


class OpCost(NamedTuple):
    """Static cost of one candidate op on one edge.

    Attributes:
        size: parameter count (BatchNorm excluded, as in the reference).
        flops: multiply-adds of the convolutions; pooling counts 9 per output.
        mac: memory access cost (elements read and written plus weights).
    """

    size: int
    flops: int
    mac: int


def op_cost(
    primitive: str, channels: int, input_size: int, stride: int
) -> OpCost:
    """Cost of one op on an edge with `channels` channels in and out.

    Implements the reference code's per-op `size`, `flops` and `mac`
    (SNAS App. F; docs/method.md §4) with C = `channels`, H = `input_size`
    and the output side y = H (stride 1) or ceil(H / 2) (stride 2, the side a
    padded 3x3 stride-2 window gives; the reference writes H // 2, which
    agrees for the even sizes it uses).

    Args:
        primitive: op name, one of `PRIMITIVES`.
        channels: C, the edge's channel count (input = output).
        input_size: H, the spatial side of the edge's input.
        stride: 1, or 2 on the edges leaving the inputs of a reduction cell.

    Returns:
        The op's `OpCost`.

    Raises:
        ValueError: for an unknown primitive, a stride other than 1 or 2, or
            non-positive `channels` / `input_size`.
    """
    check_primitive(primitive)
    if stride not in (1, 2):
        raise ValueError(f"Unknown stride {stride!r}. Expected one of (1, 2).")
    if channels < 1 or input_size < 1:
        raise ValueError(
            "channels and input_size must be positive, got "
            f"channels={channels!r}, input_size={input_size!r}."
        )
    c, h = channels, input_size
    y = h if stride == 1 else math.ceil(h / 2)
    y2 = y * y

    if primitive == "none":
        return OpCost(0, 0, 0)
    if primitive in ("max_pool_3x3", "avg_pool_3x3"):
        # A stride-2 window reads about 4 inputs per output (4 + 1 write).
        mac = (2 if stride == 1 else 5) * y2 * c
        return OpCost(0, 9 * y2 * c, mac)
    if primitive == "skip_connect":
        if stride == 1:
            # Identity: no work, but the tensor is still read and written.
            return OpCost(0, 0, 2 * c * h * h)
        # FactorizedReduce: two 1x1 stride-2 convs to C // 2 channels each.
        size = 2 * c * (c // 2)
        return OpCost(size, size * y2, 2 * y2 * (4 * c + c // 2) + size)
    # "sep_conv_3x3" -> ("sep", 3), "dil_conv_5x5" -> ("dil", 5).
    kind, k = primitive[:3], int(primitive[-1])
    if kind == "sep":
        # (depthwise kxk + pointwise 1x1) twice.
        size = 2 * c * k * k + 2 * c * c
        mac = (8 if stride == 1 else 11) * y2 * c + size
    else:
        # One depthwise kxk (dilation 2) + one pointwise 1x1.
        size = c * k * k + c * c
        mac = (4 if stride == 1 else 7) * y2 * c + size
    return OpCost(size, size * y2, mac)


def cell_cost_table(
    channels: int,
    input_size: int,
    reduction: bool,
    search_space: SearchSpace | None = None,
) -> np.ndarray:
    """Cost table of every (edge, op) pair of one cell.

    In a reduction cell the edges leaving the two cell inputs have stride 2
    and see the input side; every other edge works at the halved side with
    stride 1. In a normal cell all edges have stride 1 at the input side.

    Args:
        channels: C of the cell's edges (after the preprocessing convs).
        input_size: spatial side H of the cell's inputs.
        reduction: whether the cell halves the resolution.
        search_space: the cell topology and op order; `SearchSpace()` (the
            SNAS space) when `None`.

    Returns:
        float32 array of shape (num_edges, num_ops, 3); the last axis is
        (size, flops, mac) and the columns follow `search_space.primitives`.
    """
    space = SearchSpace() if search_space is None else search_space
    table = np.zeros((space.num_edges, space.num_ops, 3), dtype=np.float32)
    inner_size = math.ceil(input_size / 2) if reduction else input_size
    for edge in space.edges:
        if reduction and edge.from_cell_input:
            size, stride = input_size, 2
        else:
            size, stride = inner_size, 1
        for k, name in enumerate(space.primitives):
            table[edge.index, k] = op_cost(name, channels, size, stride)
    return table


def _edge_costs(weights, table):
    """(..., E, 3) costs sum_k w_ek * table[e, k, :], in float32 or wider."""
    # Under mixed precision the weights may be float16, whose range (65504)
    # is far below typical FLOPs; compute in at least float32.
    dtype = keras.backend.result_type(ops.dtype(weights), "float32")
    weights = ops.cast(weights, dtype)
    table = ops.convert_to_tensor(table, dtype=dtype)
    return ops.sum(ops.expand_dims(weights, -1) * table, axis=-2)


def edge_log_costs(weights, table):
    """Log resource penalty of every edge under op weights `weights`.

    S_e, F_e, M_e = sum_k w_ek * table[e, k, :]; each one below 1 is replaced
    by 1 (so an all-`none` edge costs 0, and log never sees 0); the result is
    (log S_e + log F_e + log M_e) / 3.

    Leading axes broadcast: weights (..., E, K) and table (..., E, K, 3).

    Args:
        weights: (num_edges, num_ops) op weights (a sample Z or softmax(α)).
        table: (num_edges, num_ops, 3) costs from `cell_cost_table`.

    Returns:
        (num_edges,) tensor of per-edge log costs.
    """
    costs = _edge_costs(weights, table)
    return ops.mean(ops.log(ops.maximum(costs, 1.0)), axis=-1)


def expected_costs(weights, table):
    """Expected (size, flops, mac) of a cell under op weights `weights`.

    For reporting: with weights = softmax(α) this is the expected parameter
    count, FLOPs and MAC of the cell under the architecture distribution.

    Args:
        weights: (num_edges, num_ops) op weights.
        table: (num_edges, num_ops, 3) costs from `cell_cost_table`.

    Returns:
        (3,) tensor: the sums over edges of sum_k w_ek * table[e, k, :].
    """
    return ops.sum(_edge_costs(weights, table), axis=-2)


def _stack_tables(tables, num_edges, num_ops):
    """Stacks per-cell tables into one (n_cells, E, K, 3) float32 array."""
    tables = [np.asarray(t, dtype=np.float32) for t in tables]
    if not tables:
        raise ValueError(
            "tables is empty; pass one cost table per cell of this type."
        )
    for table in tables:
        if table.ndim != 3 or table.shape[-1] != 3:
            raise ValueError(
                "Each cost table must have shape (num_edges, num_ops, 3), "
                f"got {table.shape}."
            )
        # Static dims may be None when tracing; check only what is known.
        for got, want in zip(
            table.shape[:2], (num_edges, num_ops), strict=True
        ):
            if want is not None and got != want:
                raise ValueError(
                    f"Cost table shape {table.shape} does not match the "
                    f"weights' (num_edges, num_ops) = ({num_edges}, "
                    f"{num_ops})."
                )
    return np.stack(tables)


def check_estimator(estimator, log_z):
    """Refuses an unknown estimator, and policy_gradient without `log_z`
    (the log of the sample computed from its noise), one line each."""
    if estimator not in ESTIMATORS:
        raise ValueError(
            f"Unknown estimator {estimator!r}. Expected one of {ESTIMATORS}."
        )
    if estimator == "policy_gradient" and log_z is None:
        raise ValueError(
            "resource_estimator 'policy_gradient' needs log_z, the log of "
            "the sample computed from its noise "
            "(gumbel_softmax.relaxed_log_one_hot), got None."
        )


def resource_penalty(
    estimator: str,
    z,
    logits,
    temperature,
    tables: Sequence[np.ndarray],
    log_z=None,
):
    """Resource penalty of one cell type (normal or reduction).

    The penalty is the mean over the cells of this type (divided by
    `len(tables)`, the actual count; the reference divides by the 8-cell
    counts 6 and 2) of sum_e edge_log_costs(w, table)_e, where w depends on
    `estimator`:

    - ``reparametrization``: w = `z`; the gradient reaches the logits
      through the sample (pathwise).
    - ``discrete``: w = softmax(`logits`), the exact expectation of the
      linear costs under the categorical distribution.
    - ``policy_gradient``: returns the surrogate
      sum_e log p(z_e) * stop_gradient(cost_e(z)) with the Concrete
      log-density of `log_z` and the sample treated as data. **Its value
      is not the cost** (it is a log-density times the cost, and may be
      negative); only its gradient with respect to `logits` means
      something: the
      score-function estimate of the gradient of E_Z[cost(Z)]. Report the
      cost with the ``reparametrization`` value or `expected_costs`.

    Args:
        estimator: one of `ESTIMATORS`.
        z: (num_edges, num_ops) relaxed sample used in the forward pass.
        logits: (num_edges, num_ops) architecture logits (log α).
        temperature: Concrete temperature λ (used by policy_gradient).
        tables: one (num_edges, num_ops, 3) cost table per cell of this
            type; cells at different depths have different C and H.
        log_z: log of `z` computed from its noise
            (`gumbel_softmax.relaxed_log_one_hot`, `ArchSample.*_log_z`);
            policy_gradient needs it: log(z) is -inf where z rounds to 0.

    Returns:
        Scalar tensor.

    Raises:
        ValueError: for an unknown estimator, empty `tables`, tables and
            weights of mismatched shapes, or policy_gradient without
            `log_z`.
    """
    check_estimator(estimator, log_z)
    for name, value in (("z", z), ("logits", logits)):
        if len(ops.shape(value)) != 2:
            raise ValueError(
                f"{name} must have shape (num_edges, num_ops), got "
                f"{ops.shape(value)}."
            )
    # One constant for all cells: the penalty is computed in one vectorised
    # pass; weights (E, K) broadcast against (n_cells, E, K, 3).
    stacked = _stack_tables(tables, *ops.shape(z))
    num_cells = stacked.shape[0]

    if estimator == "reparametrization":
        return ops.sum(edge_log_costs(z, stacked)) / num_cells
    if estimator == "discrete":
        probs = ops.softmax(logits, axis=-1)
        return ops.sum(edge_log_costs(probs, stacked)) / num_cells

    # policy_gradient. The sample is data here: no pathwise gradient, the
    # logits are reached only through the log-density (score function).
    z = ops.stop_gradient(z)
    # (E,) cost of each edge, averaged over the cells that share this z.
    cost = ops.stop_gradient(ops.mean(edge_log_costs(z, stacked), axis=0))
    # The density follows the logits' dtype (a bfloat16 sample under mixed
    # precision would not add to float32 logits).
    log_p = concrete_log_density(
        ops.stop_gradient(ops.cast(log_z, ops.dtype(logits))),
        logits,
        temperature,
    )
    return ops.sum(log_p * ops.cast(cost, log_p.dtype))


def network_cost_tables(cells, size, search_space):
    """Per-cell cost tables of a network, keyed by cell type.

    Args:
        cells: `(channels, reduction)` of each cell, in order.
        size: the input side H of the first cell (None: unknown).
        search_space: the space the tables' rows and columns follow.

    Returns:
        `{"normal": (n, ...), "reduce": (m, ...)}` stacked tables (types
        without a cell left out), or None if `size` is None: each cell
        has its own channel count and resolution.
    """
    if size is None:
        return None
    tables = {"normal": [], "reduce": []}
    for channels, reduction in cells:
        kind = "reduce" if reduction else "normal"
        tables[kind].append(
            cell_cost_table(channels, size, reduction, search_space)
        )
        if reduction:
            size = (size + 1) // 2
    return {t: np.stack(v) for t, v in tables.items() if v}
