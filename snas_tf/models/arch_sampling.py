"""The random architecture of each forward pass of the search supernet.

The supernet's architecture distribution and its draws: α (log α, one
logit tensor per cell type) and the temperature λ; the op weights Z of
each cell type, by arch mode (a relaxed one-hot sample from Gumbel noise
in `"snas"`, SNAS §2.2; softmax(α) in the two darts modes; the derived
child's one-hot Z in `"argmax"`); and the drop-path factors of the
edges' outputs in training. Each replica draws its own noise and
drop-path from the seed generators.
"""

import keras
from keras import ops

from snas_tf.layers import gumbel_softmax
from snas_tf.layers.drop_path import drop_path_scale
from snas_tf.layers.gumbel_softmax import ArchSample
from snas_tf.layers.replica_seed import replica_uniform
from snas_tf.models.bilevel_darts import top2_child

MODES = ("snas", "darts", "darts_single_level")
ARCH_MODES = MODES + ("argmax",)
# Arch modes that mix with the deterministic softmax(α).
_SOFTMAX_MODES = ("darts", "darts_single_level")
CELL_TYPES = ("normal", "reduce")


class SamplesArchitecture:
    """Mixin of `SNASSupernet` (listed before `keras.Model`): α, λ and
    the seed generators (`_init_arch_state`), Z and the drop-path factors
    of one forward pass. Reads the supernet's `search_space`, `seed`,
    `mode`, `derivation_rule`, `num_cells`, `drop_path_prob` and
    `InjectsNoise`'s injected noise."""

    def _init_arch_state(self):
        """Creates α (log α: one (num_edges, num_ops) variable per cell
        type, N(1, 0.01) as the reference code), the temperature λ and
        the seed generators of the noise and the drop-path."""
        shape = (self.search_space.num_edges, self.search_space.num_ops)
        init = keras.initializers.RandomNormal(1.0, 0.01, seed=self.seed)
        self.arch_logits_normal = self.add_weight(
            shape=shape, initializer=init, name="arch_logits_normal"
        )
        init = keras.initializers.RandomNormal(1.0, 0.01, seed=self.seed + 1)
        self.arch_logits_reduce = self.add_weight(
            shape=shape, initializer=init, name="arch_logits_reduce"
        )
        # Read by the compiled step, assigned by TemperatureScheduler.
        self.temperature = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(1.0),
            trainable=False,
            name="temperature",
        )
        self.noise_seed = keras.random.SeedGenerator(self.seed)
        # A stream of its own (α's initialisers take seed and seed + 1).
        self.drop_path_seed = keras.random.SeedGenerator(self.seed + 2)

    def arch_logits(self, cell_type):
        """log α of one of `CELL_TYPES`."""
        if cell_type not in CELL_TYPES:
            raise ValueError(
                f"Unknown cell type {cell_type!r}. Expected one of "
                f"{CELL_TYPES}."
            )
        return getattr(self, f"arch_logits_{cell_type}")

    def draw_noise(self):
        """Gumbel noise for both cell types, (2, num_edges, num_ops).

        The seed generator's state is a mirrored variable, so every replica
        would read the same seed; `replica_uniform` folds in the replica id,
        giving each replica its own noise (docs/method.md §2 decision).
        Inside `injected_noise(noise)` it returns that noise instead.
        """
        injected = self._injected_noise_value()
        if injected is not None:
            return injected
        shape = (2,) + tuple(self.arch_logits_normal.shape)
        uniform = replica_uniform(shape, self.noise_seed)
        return gumbel_softmax.gumbel_noise(uniform)

    def draw_drop_path(self, batch_size):
        """(num_cells, num_edges, batch_size) drop-path factors, 0 or
        1 / (1 - p), of every edge output of every example, as the
        authors' search (SNAS-Series, model_search.py); None at p = 0.
        Each replica draws its own, as `draw_noise`."""
        if not self.drop_path_prob:
            return None
        shape = (self.num_cells, self.search_space.num_edges, batch_size)
        uniform = replica_uniform(shape, self.drop_path_seed)
        return drop_path_scale(uniform, self.drop_path_prob)

    def sample_architecture(self, arch_mode=None, noise=None) -> ArchSample:
        """Op weights Z for one forward pass.

        Args:
            arch_mode: one of `ARCH_MODES`; defaults to `self.mode`.
            noise: optional (2, num_edges, num_ops) Gumbel noise for snas
                mode; drawn with `draw_noise()` when None.
        """
        arch_mode = arch_mode or self.mode
        if arch_mode not in ARCH_MODES:
            raise ValueError(
                f"Unknown arch_mode {arch_mode!r}. Expected one of "
                f"{ARCH_MODES}."
            )
        logits = [self.arch_logits_normal, self.arch_logits_reduce]
        if arch_mode == "argmax" and self.derivation_rule == "top2":
            (zn, index_n), (zr, index_r) = map(
                lambda a: top2_child(a, self.search_space), logits
            )
            return ArchSample(zn, zr, index_n, index_r)
        if arch_mode == "argmax":
            index = [ops.argmax(a, axis=-1) for a in logits]
            z = [gumbel_softmax.hard_one_hot(a) for a in logits]
            return ArchSample(z[0], z[1], index[0], index[1])
        if arch_mode in _SOFTMAX_MODES:
            z = [ops.softmax(a, axis=-1) for a in logits]
            log_z = [ops.log_softmax(a, axis=-1) for a in logits]
            return ArchSample(z[0], z[1], None, None, *log_z)
        if noise is None:
            noise = self.draw_noise()
        t, pairs = self.temperature, [(logits[i], noise[i]) for i in (0, 1)]
        z = [gumbel_softmax.relaxed_one_hot(a, t, g) for a, g in pairs]
        # log Z from the same noise, exact where Z rounds to 0: the sample
        # of the policy_gradient density (docs/decisions.md).
        log_z = [
            gumbel_softmax.relaxed_log_one_hot(ops.stop_gradient(a), t, g)
            for a, g in pairs
        ]
        return ArchSample(z[0], z[1], None, None, *log_z)
