"""Replaying a known Gumbel sample in the search supernet.

The search draws fresh Gumbel noise for every step. To compare a step
number for number with another implementation (the authors' code,
docs/parity.md §2), the same noise has to go in: `InjectsNoise` gives
the supernet a context manager that makes its `draw_noise` return given
noise instead.
"""

import contextlib

from keras import ops


class InjectsNoise:
    """Mixin for `SNASSupernet` (listed before `keras.Model`): the
    `injected_noise` context manager, read by its `draw_noise`."""

    _injected_noise = None

    def _injected_noise_value(self):
        """The injected noise, in α's dtype, or None outside the block."""
        if self._injected_noise is None:
            return None
        return ops.cast(self._injected_noise, self.arch_logits_normal.dtype)

    @contextlib.contextmanager
    def injected_noise(self, noise):
        """Within the block every snas-mode sample (`train_step`'s, a
        call's, `test_step`'s) uses the Gumbel noise `noise` instead of
        drawing it; the seed generator does not advance.

        Args:
            noise: (2, num_edges, num_ops) Gumbel noise G, normal then
                reduce cells (Z = softmax((log α + G) / λ)); an array, a
                tensor, or a `tf.Variable`, which a traced step reads at
                every call (assign it to change the noise of one trace).

        Keras' compiled train, test and predict functions are dropped on
        entry and on exit, so `fit` and `train_on_batch` trace with the
        noise inside the block and without it after. A `tf.function` of
        your own traced inside keeps the noise it saw. Under a strategy
        every replica gets the same noise.

        Raises:
            ValueError: if `noise` has another shape.

        Example:

        >>> with model.injected_noise(noise):
        ...     logs = model.train_on_batch(x, y, return_dict=True)
        """
        shape = (2,) + tuple(self.arch_logits_normal.shape)
        if tuple(noise.shape) != shape:
            raise ValueError(
                f"noise must have shape {shape}, got {tuple(noise.shape)}."
            )
        self._injected_noise = noise
        self._drop_compiled_functions()
        try:
            yield
        finally:
            self._injected_noise = None
            self._drop_compiled_functions()

    def _drop_compiled_functions(self):
        self.train_function = None
        self.test_function = None
        self.predict_function = None
