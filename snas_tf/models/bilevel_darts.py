"""First-order bi-level DARTS, the baseline of SNAS's Table 1.

A mixin of the search supernet for `mode="darts"`: θ trains on training
batches and α on batches of a disjoint architecture split, with softmax
mixing and no noise (Liu et al., "DARTS", ICLR 2019, §2.3 with ξ = 0);
and the DARTS-rule (`top2`) child the supernet evaluates in that mode.
docs/decisions.md says why `darts` means this.
"""

import keras
import numpy as np
from keras import ops

from snas_tf import training


def top2_child(logits, space):
    """(Z, index) of the DARTS-rule child of one cell type of `space`.

    As `genotype.derive_genotype(rule="top2")`: each node keeps its two
    edges of highest max-over-ops softmax(α), `none` excluded (ties to
    the lower source), each running its strongest op other than
    `none`; every other edge gets index `num_ops` (dropped: zeros) and
    a zero row of Z.
    """
    num_ops = space.num_ops
    real = [k for k, p in enumerate(space.primitives) if p != "none"]
    probs = ops.take(ops.softmax(logits, axis=-1), real, axis=1)
    strength = ops.max(probs, axis=1)
    best = ops.take(
        ops.convert_to_tensor(real, "int32"), ops.argmax(probs, axis=1)
    )
    nodes = np.array([e.node for e in space.edges])
    order = np.arange(space.num_edges)
    same_node = nodes[:, None] == nodes[None, :]
    earlier = order[None, :] < order[:, None]
    # ahead[e, f]: edge f of e's node ranks before e.
    mine, theirs = strength[:, None], strength[None, :]
    ahead = ops.logical_and(
        same_node,
        ops.logical_or(
            ops.greater(theirs, mine),
            ops.logical_and(ops.equal(theirs, mine), earlier),
        ),
    )
    rank = ops.sum(ops.cast(ahead, "int32"), axis=1)
    index = ops.where(rank < 2, best, num_ops)
    return ops.one_hot(index, num_ops, dtype=logits.dtype), index


class BilevelDARTS:
    """Mixin of `SNASSupernet` (listed before `keras.Model`): the
    bi-level train step. Needs the supernet's `compile`, which sets
    `_gradient_fn` and the two optimizers' clipping and decay."""

    def _bilevel_train_step(self, data):
        """First-order bi-level DARTS (Liu et al., ICLR 2019, §2.3 with
        ξ = 0), the baseline of SNAS's Table 1.

        `data` pairs a training batch with an architecture batch:
        `((x_train, x_arch), (y_train, y_arch))`. First α descends the
        loss on the architecture batch with the current θ, then θ the loss
        on the training batch with the new α, as DARTS's search loop does.
        Each update clips, decays and applies as the SNAS step does. The
        logged `loss` and metrics are the training batch's; `arch_loss`
        is the architecture batch's.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if not (
            isinstance(x, (tuple, list))
            and isinstance(y, (tuple, list))
            and len(x) == len(y) == 2
        ):
            raise ValueError(
                "mode 'darts' trains on ((x_train, x_arch), (y_train, "
                "y_arch)) batches (search_data(..., arch_fraction=f)); got "
                f"x of type {type(x).__name__}. Use mode 'darts_single_level' "
                "for plain (x, y) batches."
            )
        (x_train, x_arch), (y_train, y_arch) = x, y
        sw_train, sw_arch = sample_weight or (None, None)
        self._ensure_built(x_train)
        arch_loss, penalty, _, grads = self._gradient_fn(
            x_arch,
            y_arch,
            sw_arch,
            None,
            "arch",
            self.draw_drop_path(ops.shape(x_arch)[0]),
        )
        training.apply_update(
            self.arch_optimizer,
            grads,
            self.arch_variables,
            self.arch_clipnorm,
            self.arch_weight_decay,
        )
        loss, _, y_pred, grads = self._gradient_fn(
            x_train,
            y_train,
            sw_train,
            None,
            "weights",
            self.draw_drop_path(ops.shape(x_train)[0]),
        )
        training.apply_update(
            self.optimizer,
            grads,
            self.weight_variables,
            self.clipnorm,
            self.weight_decay,
        )
        training.track_loss(self, loss, ops.shape(x_train)[0])
        self.arch_loss_tracker.update_state(
            arch_loss * training.num_replicas(),
            sample_weight=ops.shape(x_arch)[0],
        )
        self.penalty_tracker.update_state(penalty)
        logs = self.compute_metrics(x_train, y_train, y_pred, sw_train)
        logs.pop(self.child_accuracy.name, None)
        return logs
