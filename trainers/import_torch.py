"""The import job: `run_import_torch(config, checkpoint, genotype, ...)`.

Turns a child network trained by the authors' PyTorch code into the model
directory a `snas retrain` run leaves, so that `snas export` ships it:
`config.yaml`, `genotype.json`, `import.json` (where the weights came
from) and `model.keras`, the inference network (no auxiliary head, no
drop-path; docs/decisions.md "Auxiliary head and drop-path are
training-only").

The network's sizes come from the retrain config (`child.network`,
`child.channels`, `child.num_layers`, `data.image_size`, and the class
count of `data.dataset`); the official edge lists from the genotype
(`snas_tf.models.torch_genotypes`). Every tensor of the checkpoint must
find its place in that network with its shape
(`snas_tf.models.torch_import.load_torch_state_dict`, the converter that
docs/parity.md §1 checks number for number): the auxiliary head's too,
when the checkpoint has one, which are checked and then left out of the
inference network. Nothing is written before all of that holds.
"""

import dataclasses
import hashlib
import json
import os

from snas_tf import dir_lock
from snas_tf.atomic_files import replace_atomic, write_atomic
from snas_tf.config import RetrainConfig, save_config
from snas_tf.data import num_classes
from snas_tf.models import (
    build_child_network,
    copy_weights_by_name,
    count_parameters,
)
from snas_tf.models.torch_genotypes import official_edges
from snas_tf.models.torch_import import (
    genotype_from_torch,
    load_torch_state_dict,
)
from snas_tf.torch_checkpoint import checkpoint_format, read_state_dict

AUX_PREFIX = "auxiliary_head."
_COUNTER = "num_batches_tracked"
# What an import writes; a directory holding anything else (a retraining's
# checkpoints/, history.json, ...) is not overwritten.
OUTPUTS = ("config.yaml", "genotype.json", "import.json", "model.keras")


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_empty(model_dir):
    if not os.path.isdir(model_dir):
        return
    other = sorted(
        name
        for name in os.listdir(model_dir)
        if name not in OUTPUTS and name != dir_lock.LOCK_NAME
    )
    if other:
        raise ValueError(
            f"model_dir {str(model_dir)!r} holds {other[:3]}, not an "
            "import's outputs; use a new directory."
        )


def _canonical(genotype, layout):
    """Our convention: edge_all genotypes list a node's edges by source
    (the official list orders them by strength); DARTS form keeps the
    order."""
    if layout != "edge_all":
        return genotype
    return dataclasses.replace(
        genotype,
        normal=[sorted(n, key=lambda e: e[1]) for n in genotype.normal],
        reduce=[sorted(n, key=lambda e: e[1]) for n in genotype.reduce],
    )


def import_torch_checkpoint(
    config: RetrainConfig, checkpoint, genotype, layout: str = "edge_all"
):
    """The inference network of an official checkpoint, every tensor
    checked; writes nothing.

    Args:
        config, checkpoint, genotype, layout: as `run_import_torch`.

    Returns:
        `(model, genotype, edges, info)`: the Keras inference network, our
        `Genotype`, the official edge lists and a dict describing the
        checkpoint (tensors checked, whether the auxiliary head was
        checked and left out).

    Raises:
        ValueError: as `run_import_torch`.
    """
    edges = official_edges(genotype, layout)
    ours = genotype_from_torch(edges, layout)
    state = read_state_dict(checkpoint)
    auxiliary = any(k.startswith(AUX_PREFIX) for k in state)
    kwargs = config.child_kwargs(num_classes(config.data))
    full = build_child_network(
        ours, auxiliary=auxiliary, layout=layout, **kwargs
    )
    load_torch_state_dict(full, state, edges, layout)
    model = build_child_network(ours, auxiliary=False, **kwargs)
    copy_weights_by_name(full, model)
    counters = sum(k.endswith(_COUNTER) for k in state)
    info = {
        # Every tensor but BatchNorm's step counters, which have no
        # counterpart in Keras.
        "tensors_checked": len(state) - counters,
        "batch_norm_counters_skipped": counters,
        "auxiliary_head_tensors": sum(k.startswith(AUX_PREFIX) for k in state),
        "auxiliary_head": "checked, left out" if auxiliary else "none",
    }
    return model, _canonical(ours, layout), edges, info


@dir_lock.holding("model_dir")
def run_import_torch(
    config: RetrainConfig,
    checkpoint,
    genotype,
    model_dir,
    layout: str = "edge_all",
) -> dict:
    """Writes an official checkpoint as a retrain-style model directory.

    Args:
        config: the resolved `RetrainConfig` giving the network's sizes
            (e.g. configs/cifar10_retrain.yaml); written as `config.yaml`.
        checkpoint: an `.npz` state_dict, or a `torch.save` file (needs
            PyTorch; `snas_tf.torch_checkpoint` lists the accepted forms).
        genotype: the genotype the checkpoint was trained with, in the
            official edge order (`torch_genotypes.official_edges`).
        model_dir: output directory (created; held locked while writing).
        layout: `"edge_all"` (model_edge_all.py, SNAS's `_edge_all`
            genotypes) or `"darts"` (model.py, 8-edge genotypes).

    Returns:
        A summary dict: genotype, parameters (no auxiliary head), tensors
        checked, the auxiliary head's fate and the output paths.

    Raises:
        ValueError: for a bad checkpoint (missing, unknown format, no
            PyTorch, unreadable), an unknown genotype or layout, a
            checkpoint that does not fit the network (naming the first
            mismatching tensor and both shapes), or a `model_dir` that
            holds something else; nothing is written then.
    """
    checkpoint = os.fspath(checkpoint)
    _check_empty(model_dir)
    model, ours, edges, info = import_torch_checkpoint(
        config, checkpoint, genotype, layout
    )
    # Recorded as trained: the head's presence follows the checkpoint.
    config = dataclasses.replace(
        config,
        child=dataclasses.replace(
            config.child, auxiliary=info["auxiliary_head"] != "none"
        ),
    )
    save_config(config, os.path.join(model_dir, "config.yaml"))
    write_atomic(
        os.path.join(model_dir, "genotype.json"), ours.to_json(indent=2) + "\n"
    )
    record = {
        "checkpoint": os.path.abspath(checkpoint),
        "format": checkpoint_format(checkpoint),
        "sha256": _sha256(checkpoint),
        "layout": layout,
        "official_genotype": {c: [list(e) for e in edges[c]] for c in edges},
        **info,
    }
    write_atomic(
        os.path.join(model_dir, "import.json"),
        json.dumps(record, indent=2) + "\n",
    )
    model_path = os.path.join(model_dir, "model.keras")
    replace_atomic(model_path, model.save)
    return {
        "genotype": ours.to_string(),
        "parameters": count_parameters(model),
        "tensors_checked": info["tensors_checked"],
        "auxiliary_head": info["auxiliary_head"],
        "model_dir": str(model_dir),
        "model_path": model_path,
    }


__all__ = ["import_torch_checkpoint", "run_import_torch"]
