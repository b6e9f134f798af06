"""Temperature schedules as pure functions of the epoch.

SNAS anneals the Concrete temperature λ towards zero so that the relaxed
samples approach one-hot architectures (§2.2). The reference code anneals
linearly from 1.0 to 0.03, stepped at the start of each epoch, but hard-codes
150 epochs; here the schedule spans the configured number of epochs
(docs/method.md §2, decision).
"""

import math

TEMPERATURE_SCHEDULES = ("linear", "exponential")


def temperature_at(
    epoch: int,
    epochs: int,
    initial: float,
    final: float,
    schedule: str = "linear",
) -> float:
    """Temperature λ for 0-based `epoch` of a search of `epochs` epochs.

    Epoch 0 uses `initial`, the last epoch uses `final`; in between λ moves
    linearly (`linear`) or geometrically (`exponential`). Epochs past the end
    keep `final`.

    Args:
        epoch: 0-based epoch index.
        epochs: total number of epochs (>= 1).
        initial: λ at the first epoch (> 0).
        final: λ at the last epoch (> 0).
        schedule: one of `TEMPERATURE_SCHEDULES`.

    Returns:
        The temperature as a float.

    Raises:
        ValueError: for an unknown schedule or non-positive values.
    """
    if schedule not in TEMPERATURE_SCHEDULES:
        raise ValueError(
            f"Unknown temperature schedule {schedule!r}. Expected one of "
            f"{TEMPERATURE_SCHEDULES}."
        )
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs!r}.")
    if initial <= 0 or final <= 0:
        raise ValueError(
            f"Temperatures must be > 0, got initial={initial!r}, "
            f"final={final!r}."
        )
    progress = min(max(epoch, 0) / max(epochs - 1, 1), 1.0)
    if schedule == "linear":
        return initial + (final - initial) * progress
    return math.exp(
        math.log(initial) + (math.log(final) - math.log(initial)) * progress
    )
