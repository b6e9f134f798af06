"""Reads a PyTorch checkpoint's state_dict as NumPy arrays.

`read_state_dict(path)` returns `{tensor name: np.ndarray}` for
`snas_tf.models.torch_import.load_torch_state_dict`:

- `.npz`: a NumPy archive of the state_dict, one array per tensor name
  (`np.savez(path, **{k: v.numpy() for k, v in sd.items()})`). Read with
  NumPy alone, no pickles.
- `.pt`, `.pth`, `.tar` (`.pth.tar`), `.ckpt`: a `torch.save` file, the
  zip format or the legacy pre-1.6 one (the authors' released CIFAR-10
  model), read with `torch.load(path, weights_only=True,
  map_location="cpu")`: tensors and plain containers only, never code.
  Needs PyTorch, the optional extra `snas-tf[torch]` (`TORCH_INSTALL`).

The file may hold the state_dict itself or a dict that wraps it under one
of `WRAPPER_KEYS` (e.g. `{"epoch": 5, "state_dict": {...}}`), searched in
that order; a `module.` prefix on every name (a model saved from
`torch.nn.DataParallel`) is removed. Half-precision floats are read as
float32. Imports no TensorFlow, so a bad file fails fast.
"""

import importlib.util
import os

import numpy as np

NPZ_SUFFIXES = (".npz",)
TORCH_SUFFIXES = (".pt", ".pth", ".tar", ".ckpt")
SUFFIXES = NPZ_SUFFIXES + TORCH_SUFFIXES
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
# The CPU build: a plain `pip install torch` on Linux x86-64 pulls the
# multi-GB CUDA one.
TORCH_INSTALL = (
    "pip install 'snas-tf[torch]' --extra-index-url "
    "https://download.pytorch.org/whl/cpu"
)
_DATA_PARALLEL = "module."


def checkpoint_format(path) -> str:
    """`"npz"` or `"torch"`, from the file name.

    Raises:
        ValueError: for any other suffix, naming the valid ones.
    """
    name = os.fspath(path).lower()
    if name.endswith(NPZ_SUFFIXES):
        return "npz"
    if name.endswith(TORCH_SUFFIXES):
        return "torch"
    raise ValueError(
        f"Unknown checkpoint format {os.fspath(path)!r}. Expected a name "
        f"ending in one of {SUFFIXES} (.npz: NumPy, read without PyTorch; "
        "the others: torch.save files)."
    )


def torch_available() -> bool:
    """Whether PyTorch can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a None entry in sys.modules
        return False


def _no_torch(path):
    return ValueError(
        f"Reading the torch.save file {os.fspath(path)!r} needs PyTorch, "
        f"which is not installed: {TORCH_INSTALL} (or convert the "
        "state_dict to .npz elsewhere)."
    )


def check_checkpoint(path) -> str:
    """Checks what can be checked before reading: the suffix, and that
    PyTorch is there for a torch.save file. Returns the format.

    Raises:
        ValueError: for an unknown suffix or a missing PyTorch.
    """
    fmt = checkpoint_format(path)
    if fmt == "torch" and not torch_available():
        raise _no_torch(path)
    return fmt


def _is_array(value):
    return hasattr(value, "shape") and hasattr(value, "dtype")


def unwrap_state_dict(obj, path="checkpoint") -> dict:
    """The state_dict inside a loaded checkpoint: `obj` itself when every
    value is a tensor, else the first of `WRAPPER_KEYS` that holds one;
    with a `module.` prefix on every name removed.

    Raises:
        ValueError: if no state_dict is found.
    """
    if not isinstance(obj, dict):
        raise ValueError(
            f"{path!r} holds a {type(obj).__name__}, not a state_dict; "
            "expected a dict of tensors (torch.save(model.state_dict()))."
        )
    if obj and all(_is_array(v) for v in obj.values()):
        state = obj
    else:
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict) and inner:
                if all(_is_array(v) for v in inner.values()):
                    state = inner
                    break
        else:
            raise ValueError(
                f"{path!r} holds no state_dict: expected a dict of tensors "
                f"or one under a key of {WRAPPER_KEYS}; its keys are "
                f"{list(obj)[:5]}."
            )
    if all(str(k).startswith(_DATA_PARALLEL) for k in state):
        state = {k.removeprefix(_DATA_PARALLEL): v for k, v in state.items()}
    return {str(k): v for k, v in state.items()}


def _torch_arrays(path):
    try:
        import torch
    except ImportError:
        raise _no_torch(path) from None
    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # unpickling, zip and format errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(
            f"Cannot read {os.fspath(path)!r} with torch.load(weights_only="
            f"True): {type(e).__name__}: {first} (a whole pickled model "
            "cannot be read safely: save model.state_dict())."
        ) from e
    state = unwrap_state_dict(obj, os.fspath(path))
    out = {}
    for name, tensor in state.items():
        tensor = tensor.detach().cpu()
        if tensor.is_floating_point() and tensor.element_size() < 4:
            tensor = tensor.float()  # NumPy has no bfloat16
        out[name] = tensor.numpy()
    return out


def _npz_arrays(path):
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise ValueError(
            f"Cannot read {os.fspath(path)!r} as a NumPy .npz archive: {e}"
        ) from e
    return unwrap_state_dict(arrays, os.fspath(path))


def read_state_dict(path) -> dict:
    """The state_dict of the checkpoint at `path`, as NumPy arrays.

    Args:
        path: an `.npz` archive or a `torch.save` file (module docstring).

    Returns:
        `{tensor name: np.ndarray}`, names without a `module.` prefix.

    Raises:
        ValueError: for a missing file, an unknown suffix, a missing
            PyTorch (naming the install command), an unreadable file or
            one that holds no state_dict.
    """
    if not os.path.exists(path):
        raise ValueError(f"Checkpoint {os.fspath(path)!r} does not exist.")
    if not os.path.isfile(path):
        raise ValueError(f"Checkpoint {os.fspath(path)!r} is not a file.")
    if check_checkpoint(path) == "npz":
        return _npz_arrays(path)
    return _torch_arrays(path)


__all__ = [
    "SUFFIXES",
    "TORCH_INSTALL",
    "WRAPPER_KEYS",
    "check_checkpoint",
    "checkpoint_format",
    "read_state_dict",
    "torch_available",
    "unwrap_state_dict",
]
