"""The resource penalty of the search supernet's loss (SNAS §2.4).

A mixin of the supernet: it checks and keeps the penalty's arguments
(estimator, resource, latency costs and target, η), builds the per-cell
cost tables of size, FLOPs and MAC once the image size is known, and
prices a sample Z with them (`snas_tf.resource_cost`) or with the target
network's latency (`snas_tf.latency.penalty`). docs/method.md §4.
"""

from snas_tf import resource_cost
from snas_tf.config import MODE_DEFAULTS
from snas_tf.latency.penalty import latency_penalty, latency_resource
from snas_tf.layers.gumbel_softmax import ArchSample
from snas_tf.models.arch_sampling import CELL_TYPES


class PenalizesResources:
    """Mixin of `SNASSupernet` (listed before `keras.Model`): the
    resource penalty. Reads the supernet's `cells`, `search_space`,
    `temperature` and `arch_logits(cell_type)`."""

    def _init_resource_penalty(
        self,
        mode,
        resource_estimator,
        resource,
        latency_costs,
        latency_target_ms,
        penalty_strength,
    ):
        """Checks and keeps the penalty's arguments (see `SNASSupernet`);
        `penalty_strength` None takes `mode`'s η."""
        if resource_estimator not in resource_cost.ESTIMATORS:
            raise ValueError(
                f"Unknown resource_estimator {resource_estimator!r}. "
                f"Expected one of {resource_cost.ESTIMATORS}."
            )
        latency_costs = latency_resource(
            resource, latency_costs, latency_target_ms
        )
        if penalty_strength is None:
            penalty_strength = MODE_DEFAULTS[mode]["penalty_strength"]
        if penalty_strength < 0:
            raise ValueError(
                f"penalty_strength must be >= 0, got {penalty_strength!r}."
            )
        self.resource_estimator = resource_estimator
        self.resource = resource
        self.latency_costs = latency_costs
        self.latency_target_ms = latency_target_ms
        self.penalty_strength = float(penalty_strength)
        # Set by `_build_cost_tables` when the image size is known.
        self.cost_tables = None

    def _build_cost_tables(self, input_shape):
        """The cells' per-edge cost tables for images of `input_shape`
        (None without a static image size)."""
        self.cost_tables = resource_cost.network_cost_tables(
            [(c.channels, c.reduction) for c in self.cells],
            input_shape[1],
            self.search_space,
        )

    def resource_penalty(self, sample: ArchSample):
        """Resource penalty (before η): of both cell types, each averaged
        over its actual number of cells (SNAS §2.4), or the latency
        penalty of the target network (`snas_tf.latency.penalty`)."""
        if self.resource == "latency":
            target = self.latency_target_ms
            return latency_penalty(
                self.resource_estimator,
                {t: getattr(sample, t) for t in CELL_TYPES},
                {t: self.arch_logits(t) for t in CELL_TYPES},
                self.temperature,
                self.latency_costs.tables,
                self.latency_costs.constant_us,
                None if target is None else 1e3 * target,
                log_z={t: getattr(sample, f"{t}_log_z") for t in CELL_TYPES},
            )
        if self.cost_tables is None:
            raise ValueError(
                "The resource penalty needs a static image size; build the "
                "model with known H and W."
            )
        total = 0.0
        for cell_type, tables in self.cost_tables.items():
            total += resource_cost.resource_penalty(
                self.resource_estimator,
                getattr(sample, cell_type),
                self.arch_logits(cell_type),
                self.temperature,
                tables,
                log_z=getattr(sample, f"{cell_type}_log_z"),
            )
        return total
