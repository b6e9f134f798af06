"""`history.json` of a search or a retraining, read and checked."""

import dataclasses
import json
import os

from snas_tf.genotype import CELLS


@dataclasses.dataclass(frozen=True)
class RunHistory:
    """A checked `history.json` of a search or a retraining.

    Attributes:
        path: the file it was read from (named in error messages).
        epochs: the per-epoch records (dicts), at least one.
        primitives: op names in α column order; None in a retrain history.
        num_nodes: intermediate nodes per cell; None in a retrain history.
    """

    path: str
    epochs: tuple
    primitives: tuple | None = None
    num_nodes: int | None = None

    def alpha_records(self) -> list[dict]:
        """The epoch records that hold both `alpha_normal` and
        `alpha_reduce`."""
        return [
            r
            for r in self.epochs
            if all(f"alpha_{cell}" in r for cell in CELLS)
        ]


def malformed(path, why: str) -> ValueError:
    """The error for a history file that is not as expected."""
    return ValueError(f"Malformed history file {path}: {why}")


def _read_json(path):
    if not os.path.isfile(path):
        raise ValueError(f"History file {path} does not exist.")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise malformed(path, str(e)) from e


def load_history(history: "str | os.PathLike | RunHistory") -> RunHistory:
    """Reads and checks a `history.json`.

    Args:
        history: a path, or a `RunHistory` (returned as is).

    Returns:
        The `RunHistory`.

    Raises:
        ValueError: naming the file when it is missing, is not JSON, has no
            `epochs` list of records or an empty one, or has a bad
            `primitives` / `num_nodes`.
    """
    if isinstance(history, RunHistory):
        return history
    path = os.fspath(history)
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("epochs"), list):
        raise malformed(path, "expected an object with an 'epochs' list.")
    epochs = data["epochs"]
    if not epochs:
        raise ValueError(
            f"History file {path} has no epochs; expected at least one "
            "epoch record."
        )
    if not all(isinstance(r, dict) for r in epochs):
        raise malformed(path, "each entry of 'epochs' must be an object.")
    primitives = data.get("primitives")
    if primitives is not None:
        if not (
            isinstance(primitives, list)
            and primitives
            and all(isinstance(p, str) for p in primitives)
        ):
            raise malformed(path, "'primitives' must be a list of op names.")
        primitives = tuple(primitives)
    num_nodes = data.get("num_nodes")
    if num_nodes is not None and (
        not isinstance(num_nodes, int)
        or isinstance(num_nodes, bool)
        or num_nodes < 1
    ):
        raise malformed(path, "'num_nodes' must be an int >= 1.")
    return RunHistory(path, tuple(epochs), primitives, num_nodes)
