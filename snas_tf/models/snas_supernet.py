"""The SNAS search supernet with a one-loss, one-backward-pass train step,
and the first-order bi-level DARTS step it is compared with.

The network and its steps are here; the sampling of Z and drop-path
(`arch_sampling.py`), the resource penalty (`resource_penalty.py`) and
the bi-level step (`bilevel_darts.py`) are mixins beside it.

Reference:
    Xie et al., "SNAS: Stochastic Neural Architecture Search", ICLR 2019,
    §2-3; the authors' code (model_search.py, train_search.py).
"""

import keras
import tensorflow as tf
from keras import ops

from snas_tf import kernels, training
from snas_tf.cells.search_cell import SearchCell
from snas_tf.config import MODE_DEFAULTS, ModelConfig, SearchConfig
from snas_tf.genotype import RULES
from snas_tf.kernels.tracing import (
    built_by_mixing,
    recomputing,
    short_variable_names,
)
from snas_tf.layers.gumbel_softmax import ArchSample
from snas_tf.models.arch_sampling import (
    ARCH_MODES,
    CELL_TYPES,
    MODES,
    SamplesArchitecture,
)
from snas_tf.models.bilevel_darts import BilevelDARTS
from snas_tf.models.eager_build import BuildsBeforeFit
from snas_tf.models.noise_injection import InjectsNoise
from snas_tf.models.resource_penalty import PenalizesResources
from snas_tf.ops import batch_norm
from snas_tf.optimizers import FusedSGD
from snas_tf.search_space import PRIMITIVES, SearchSpace, reduction_cells

# Defined in arch_sampling; importable from here as before the split.
__all__ = ["ARCH_MODES", "CELL_TYPES", "MODES", "ArchSample", "SNASSupernet"]


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"Unknown {name} {value!r}. Expected one of {choices}."
        )


def _recomputed(cell):
    """`cell` in training mode under `tf.recompute_grad`: its op outputs
    are not kept for the backward pass but computed again there (with the
    same drop-path factors, drawn outside)."""

    def run(s0, s1, z, *drop):
        return cell(s0, s1, z, None, *drop, training=True)

    return tf.recompute_grad(run)


@keras.saving.register_keras_serializable(package="snas_tf")
class SNASSupernet(
    BilevelDARTS,
    BuildsBeforeFit,
    InjectsNoise,
    SamplesArchitecture,
    PenalizesResources,
    training.SingleFunctionTrainStep,
    keras.Model,
):
    """The SNAS supernet: stem, L search cells, global pool, classifier.

    Owns the architecture logits (log α), one `(num_edges, num_ops)`
    variable per cell type, initialised N(1, 0.01) as the reference code.
    Each forward pass draws one relaxed sample Z per cell type, shared by
    all cells of that type and the whole batch; under a distribution
    strategy each replica draws its own Z while α stays one mirrored
    variable. `train_step` computes one loss (cross-entropy + η·penalty) on
    one batch, takes gradients once, and updates θ with `optimizer` and α
    with `arch_optimizer`. In `"darts"` mode it is first-order bi-level
    DARTS instead, the baseline of the paper's Table 1: each step first
    updates α from the loss on an architecture batch, then θ from the loss
    on a training batch (`_bilevel_train_step`).

    Labels are integer class ids (sparse), as the data pipelines give.

    Args:
        num_classes: classifier outputs.
        channels: C, channels of the first cells (doubled at reductions).
        num_cells: L cells; reductions at L//3 and 2L//3.
        num_nodes: intermediate nodes per cell.
        primitives: candidate ops (logit-column order).
        stem_multiplier: the stem conv has `stem_multiplier * C` channels.
        mode: `"snas"` (Gumbel noise, temperature λ, one step on one
            batch), `"darts"` (deterministic softmax of α, no noise, no
            temperature; bi-level: `fit` data are `((x_train, x_arch),
            (y_train, y_arch))` batches) or `"darts_single_level"` (the
            softmax of `"darts"` in the one-batch step of `"snas"`).
        resource_estimator: one of `resource_cost.ESTIMATORS`.
        resource: `"size_flops_mac"` (per-edge logs of size, FLOPs, MAC)
            or `"latency"` (the log of the target network's expected
            latency, `latency_costs`: a `snas_tf.latency.cost.LatencyCosts`
            or its `to_config()`); `latency_target_ms` T0 makes that
            penalty |T / T0 - 1| (TuNAS).
        penalty_strength: η, weight of the resource penalty (0 disables
            it; None: the mode's, `snas_tf.config.MODE_DEFAULTS`).
        derivation_rule: the rule of the derived child that argmax mode
            (and so the child accuracy) evaluates, one of
            `snas_tf.genotype.RULES`; None: the mode's.
        drop_path_prob: p of the drop-path on every mixed-edge output in
            training (each example's output zeroed with probability p,
            the others scaled by 1 / (1 - p)), as the authors' code; 0
            turns it off; None: the mode's,
            `snas_tf.config.MODE_DEFAULTS`.
        seed: seed of the Gumbel noise, the drop-path and the α
            initialisation.
        recompute: in training, keep only each cell's inputs for the
            backward pass and compute its op outputs again there
            (`tf.recompute_grad` per cell, as the reference's gradient
            checkpointing option): less memory, more compute; the same
            gradients and moving statistics. `True` does so for every
            cell, an int N for the first N cells only: the early cells
            work at the highest resolution and so hold most of the
            memory for the same compute (figures in
            `benchmarks/README.md`). Needs `fast_kernels`.
        fast_kernels: build the cells from `snas_tf.kernels` (same math,
            faster TensorFlow kernels); False builds them from plain
            `keras.layers`, for checking the fast path against it.
        **kwargs: base `Model` arguments (`name`, ...).

    Call arguments:
        inputs: (batch, H, W, channels) images.
        training: Keras training flag (BatchNorm batch statistics and
            the edges' drop-path).
        arch_mode: one of `MODES` (the two darts modes mix with
            softmax(α)) or `"argmax"` (the derived child under
            `derivation_rule`: Z one-hot on each kept edge's op, zero on
            dropped edges; only the chosen op of each edge runs);
            defaults to `mode`.

    Example:

    >>> model = SNASSupernet(num_classes=10, channels=4, num_cells=2)
    >>> model(keras.random.normal((2, 8, 8, 3))).shape
    (2, 10)

    Reference:
        Xie et al., "SNAS: Stochastic Neural Architecture Search",
        ICLR 2019.
    """

    def __init__(
        self,
        num_classes=10,
        channels=ModelConfig.channels,
        num_cells=ModelConfig.num_cells,
        num_nodes=ModelConfig.num_nodes,
        primitives=PRIMITIVES,
        stem_multiplier=ModelConfig.stem_multiplier,
        mode=SearchConfig.mode,
        resource_estimator=SearchConfig.resource_estimator,
        resource=SearchConfig.resource,
        latency_costs=None,
        latency_target_ms=None,
        penalty_strength=None,
        derivation_rule=None,
        drop_path_prob=None,
        seed=0,
        recompute=False,
        fast_kernels=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_choice("mode", mode, MODES)
        self._init_resource_penalty(
            mode,
            resource_estimator,
            resource,
            latency_costs,
            latency_target_ms,
            penalty_strength,
        )
        if derivation_rule is None:
            derivation_rule = MODE_DEFAULTS[mode]["derivation_rule"]
        _check_choice("derivation_rule", derivation_rule, RULES)
        if drop_path_prob is None:
            drop_path_prob = MODE_DEFAULTS[mode]["drop_path_prob"]
        if isinstance(drop_path_prob, bool) or not 0 <= drop_path_prob < 1:
            raise ValueError(
                f"drop_path_prob must be in [0, 1), got {drop_path_prob!r}."
            )
        if num_cells < 1:
            raise ValueError(f"num_cells must be >= 1, got {num_cells!r}.")
        if not isinstance(recompute, bool) and (
            not isinstance(recompute, int) or not 0 <= recompute <= num_cells
        ):
            raise ValueError(
                f"recompute must be True, False or a number of cells from 0 "
                f"to num_cells={num_cells}, got {recompute!r}."
            )
        if recompute and not fast_kernels:
            # Keras' own BatchNormalization would update its moving
            # statistics a second time in the recomputed forward pass.
            raise ValueError(
                f"recompute={recompute!r} needs fast_kernels=True (the "
                "plain Keras BatchNormalization cannot skip the update of "
                "its moving statistics in the recomputed pass)."
            )
        self.num_classes = int(num_classes)
        self.channels = int(channels)
        self.num_cells = int(num_cells)
        self.search_space = SearchSpace(tuple(primitives), int(num_nodes))
        self.stem_multiplier = int(stem_multiplier)
        self.mode = mode
        self.derivation_rule = derivation_rule
        self.drop_path_prob = float(drop_path_prob)
        self.seed = int(seed)
        self.recompute = recompute
        self.fast_kernels = bool(fast_kernels)
        self._build_network()
        self._init_arch_state()
        self.penalty_tracker = keras.metrics.Mean(name="penalty")
        if mode == "darts":
            # The loss α descends, on the architecture batches.
            self.arch_loss_tracker = keras.metrics.Mean(name="arch_loss")
        self.child_accuracy = keras.metrics.SparseCategoricalAccuracy(
            name="child_accuracy"
        )

    def _build_network(self):
        c = self.channels
        # The stem BN is affine as in the reference code; the cells' are not.
        self.stem_conv = keras.layers.Conv2D(
            self.stem_multiplier * c, 3, padding="same", use_bias=False
        )
        self.stem_bn = batch_norm(
            True, None, kernels.layers_namespace(self.fast_kernels)
        )
        reductions = reduction_cells(self.num_cells)
        self.cells = []
        reduction_prev = False
        for i in range(self.num_cells):
            reduction = i in reductions
            if reduction:
                c *= 2
            self.cells.append(
                SearchCell(
                    c,
                    reduction,
                    reduction_prev,
                    primitives=self.search_space.primitives,
                    num_nodes=self.search_space.num_nodes,
                    fast_kernels=self.fast_kernels,
                    name=f"cell_{i}",
                )
            )
            reduction_prev = reduction
        self.global_pool = keras.layers.GlobalAveragePooling2D()
        self.classifier = keras.layers.Dense(self.num_classes)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"Expected images of shape (batch, H, W, C), got {input_shape}."
            )
        self._build_cost_tables(input_shape)
        # Build every op of every edge with one eager pass in mixing mode on
        # a one-image batch: outside the conditionals of argmax mode, and
        # far faster than tracing the network symbolically (the supernet
        # has thousands of layers). init_scope leaves any enclosing trace.
        _, h, w, c = input_shape
        with tf.init_scope(), built_by_mixing(), short_variable_names():
            x = tf.zeros((1, h or 8, w or 8, c), dtype=self.compute_dtype)
            z = (
                tf.ones(self.arch_logits_normal.shape)
                / self.search_space.num_ops
            )
            self.forward(x, ArchSample(z, z), training=False)
        if getattr(self, "compiled", False):
            self._build_training_state()

    @property
    def arch_variables(self) -> list:
        """The architecture logits α, normal then reduce."""
        return [self.arch_logits_normal, self.arch_logits_reduce]

    @property
    def weight_variables(self) -> list:
        """Trainable network weights θ: every trainable variable but α."""
        arch = {id(v) for v in self.arch_variables}
        return [v for v in self.trainable_variables if id(v) not in arch]

    def forward(
        self, inputs, sample: ArchSample, training=None, drop_path=None
    ):
        """Logits of the network for given op weights.

        In training every edge output is multiplied by its drop-path
        factor: `drop_path` ((num_cells, num_edges, batch), from
        `draw_drop_path`), drawn here when None.
        """
        if training and drop_path is None:
            drop_path = self.draw_drop_path(ops.shape(inputs)[0])
        if not training:
            drop_path = None
        s0 = s1 = self.stem_bn(self.stem_conv(inputs), training=training)
        # How many leading cells run under tf.recompute_grad in training.
        recomputed = (
            len(self.cells) if self.recompute is True else self.recompute
        )
        for i, cell in enumerate(self.cells):
            if cell.reduction:
                z, index = sample.reduce, sample.reduce_index
            else:
                z, index = sample.normal, sample.normal_index
            drop = () if drop_path is None else (drop_path[i],)
            if i < recomputed and training and index is None:
                s0, s1 = s1, _recomputed(cell)(s0, s1, z, *drop)
            else:
                s0, s1 = s1, cell(s0, s1, z, index, *drop, training=training)
        return self.classifier(self.global_pool(s1))

    def call(self, inputs, training=None, arch_mode=None):
        return self.forward(
            inputs, self.sample_architecture(arch_mode), training
        )

    def compile(
        self,
        optimizer=None,
        arch_optimizer=None,
        loss=None,
        metrics=("accuracy",),
        weight_decay=SearchConfig.weight_decay,
        arch_weight_decay=SearchConfig.arch_weight_decay,
        clipnorm=SearchConfig.clipnorm,
        arch_clipnorm=SearchConfig.arch_clipnorm,
        **kwargs,
    ):
        """Configures the search.

        Args:
            optimizer: optimizer of the network weights θ; default SGD
                with `SearchConfig`'s learning rate and momentum (constant:
                use `default_search_optimizers` for the cosine decay).
            arch_optimizer: optimizer of α; default Adam with
                `SearchConfig`'s learning rate and betas.
            loss: default sparse categorical cross-entropy on logits.
            metrics: metrics of the supernet's (sampled) predictions.
            weight_decay: L2 coefficient on θ, added to the gradient after
                clipping as PyTorch's SGD does in the reference (with
                momentum this differs from Keras' decoupled weight decay).
            arch_weight_decay: same for α (PyTorch Adam's coupled L2).
            clipnorm: global-norm clip of θ's gradient (global batch).
            arch_clipnorm: global-norm clip of α's gradient.
            **kwargs: other `keras.Model.compile` arguments.

        Raises:
            ValueError: if an optimizer has its own clipping set, which
                would clip per replica before the all-reduce.
        """
        if optimizer is None:
            optimizer = FusedSGD(
                SearchConfig.learning_rate, momentum=SearchConfig.momentum
            )
        if arch_optimizer is None:
            arch_optimizer = keras.optimizers.Adam(
                SearchConfig.arch_learning_rate,
                beta_1=SearchConfig.arch_beta_1,
                beta_2=SearchConfig.arch_beta_2,
            )
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        jit, replica_jit = training.replica_jit(
            self, kwargs.pop("jit_compile", "auto")
        )
        super().compile(
            optimizer=optimizer,
            loss=loss,
            metrics=list(metrics),
            jit_compile=jit,
            **kwargs,
        )
        # The per-replica pass, XLA-compiled when asked.
        self._gradient_fn = (
            tf.function(self._loss_and_gradients, jit_compile=True)
            if replica_jit
            else self._loss_and_gradients
        )
        self.arch_optimizer = keras.optimizers.get(arch_optimizer)
        for opt in (self.optimizer, self.arch_optimizer):
            training.check_no_clipping(opt)
        self.weight_decay = float(weight_decay)
        self.arch_weight_decay = float(arch_weight_decay)
        self.clipnorm = clipnorm
        self.arch_clipnorm = arch_clipnorm
        # Built here, inside the caller's strategy scope: lazy building in
        # the traced step fails under a strategy (docs/tensorflow-notes.md §1).
        self.arch_optimizer.build(self.arch_variables)
        if self.built:
            self._build_training_state()

    def _loss_and_gradients(
        self, x, y, sample_weight, noise, part="both", drop_path=None
    ):
        """Forward pass, one loss, one backward pass (SNAS §3.1).

        `noise` is the Gumbel noise of snas mode (None in the softmax
        modes), `drop_path` the edges' drop-path factors (None: off);
        `part` picks the variables differentiated: `"both"` (θ
        then α, SNAS's one pass), `"weights"` or `"arch"` (the two
        halves of a bi-level DARTS step).

        Returns (loss, penalty, y_pred, gradients); `loss` is the
        replica-scaled cross-entropy, without the penalty.
        """
        variables = {
            "both": self.weight_variables + self.arch_variables,
            "weights": self.weight_variables,
            "arch": self.arch_variables,
        }[part]
        with tf.GradientTape() as tape:
            sample = self.sample_architecture(noise=noise)
            y_pred = self.forward(x, sample, True, drop_path)
            loss = self.compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight
            )
            penalty = self.resource_penalty(sample)
            # One loss: the penalty joins the replica-scaled loss.
            total = loss + training.per_replica(self.penalty_strength * penalty)
        with recomputing():
            grads = tape.gradient(total, variables)
        return loss, penalty, y_pred, grads

    def train_step(self, data):
        if self.mode == "darts":
            return self._bilevel_train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._ensure_built(x)
        weights, arch = self.weight_variables, self.arch_variables
        # The noise and drop-path are drawn outside the (optionally
        # XLA-compiled) pass: the seed generators' updates stay out of it.
        noise = self.draw_noise() if self.mode == "snas" else None
        drop_path = self.draw_drop_path(ops.shape(x)[0])
        loss, penalty, y_pred, grads = self._gradient_fn(
            x, y, sample_weight, noise, "both", drop_path
        )
        training.apply_update(
            self.optimizer,
            grads[: len(weights)],
            weights,
            self.clipnorm,
            self.weight_decay,
        )
        training.apply_update(
            self.arch_optimizer,
            grads[len(weights) :],
            arch,
            self.arch_clipnorm,
            self.arch_weight_decay,
        )
        training.track_loss(self, loss, ops.shape(x)[0])
        self.penalty_tracker.update_state(penalty)
        logs = self.compute_metrics(x, y, y_pred, sample_weight)
        # The child accuracy is measured in test_step only.
        logs.pop(self.child_accuracy.name, None)
        return logs

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        self._ensure_built(x)
        # Supernet accuracy with a sampled Z, and the derived child's
        # accuracy with inherited weights, without retraining (SNAS §3.1).
        y_pred = self(x, training=False)
        loss = self.compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False
        )
        training.track_loss(self, loss, ops.shape(x)[0])
        child = self(x, training=False, arch_mode="argmax")
        self.child_accuracy.update_state(y, child, sample_weight)
        logs = self.compute_metrics(x, y, y_pred, sample_weight)
        # The penalty (and darts mode's arch_loss) are training
        # quantities; evaluation does not track them.
        logs.pop(self.penalty_tracker.name, None)
        logs.pop("arch_loss", None)
        return logs

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            channels=self.channels,
            num_cells=self.num_cells,
            num_nodes=self.search_space.num_nodes,
            primitives=list(self.search_space.primitives),
            stem_multiplier=self.stem_multiplier,
            mode=self.mode,
            resource_estimator=self.resource_estimator,
            resource=self.resource,
            latency_costs=(
                None
                if self.latency_costs is None
                else self.latency_costs.to_config()
            ),
            latency_target_ms=self.latency_target_ms,
            penalty_strength=self.penalty_strength,
            derivation_rule=self.derivation_rule,
            drop_path_prob=self.drop_path_prob,
            seed=self.seed,
            recompute=self.recompute,
            fast_kernels=self.fast_kernels,
        )
        return config
