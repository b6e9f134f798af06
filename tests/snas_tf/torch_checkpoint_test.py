"""Reading official checkpoints: .npz without PyTorch, torch.save with it.

The tests marked `torch` need PyTorch (`make test-torch`) and skip
without it; the others simulate its absence.
"""

import pathlib
import sys

import numpy as np
import pytest

from snas_tf import torch_checkpoint
from snas_tf.torch_checkpoint import (
    TORCH_INSTALL,
    read_state_dict,
    unwrap_state_dict,
)

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "reference/fixtures"
NPZ = FIXTURES / "import_checkpoint.npz"
ZIP = FIXTURES / "import_checkpoint.pt"
LEGACY = FIXTURES / "import_checkpoint_legacy.pt"
STATE = {"stem.0.weight": np.ones((2, 3, 3, 3)), "classifier.bias": np.ones(2)}


@pytest.fixture
def no_torch(monkeypatch):
    """An environment without PyTorch: its import fails."""
    monkeypatch.setitem(sys.modules, "torch", None)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: {"state_dict": s, "epoch": 3},
        lambda s: {"epoch": 3, "model_state_dict": s, "optimizer": {}},
        lambda s: {"model": s},
        lambda s: {f"module.{k}": v for k, v in s.items()},
        lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}},
    ],
)
def test_the_state_dict_is_found_in_its_wrappers(wrap):
    assert unwrap_state_dict(wrap(STATE)).keys() == STATE.keys()


def test_only_an_all_module_prefix_is_removed():
    state = {"module.a": np.ones(1), "b": np.ones(1)}
    assert unwrap_state_dict(state).keys() == state.keys()


@pytest.mark.parametrize(
    "obj, named",
    [
        ({"epoch": 3, "optimizer": {"lr": 0.1}}, "['epoch', 'optimizer']"),
        ({"state_dict": {"epoch": 3}}, "holds no state_dict"),
        ([np.ones(1)], "holds a list"),
        ({}, "holds no state_dict"),
    ],
)
def test_no_state_dict_is_refused_naming_what_is_there(obj, named):
    with pytest.raises(ValueError, match="state_dict") as info:
        unwrap_state_dict(obj, "ckpt.pt")
    assert named in str(info.value) and "'ckpt.pt'" in str(info.value)


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("w.npz", "npz"),
        ("w.pt", "torch"),
        ("w.pth", "torch"),
        ("w.pth.tar", "torch"),
        ("W.CKPT", "torch"),
    ],
)
def test_the_format_follows_the_suffix(name, fmt):
    assert torch_checkpoint.checkpoint_format(name) == fmt


def test_an_unknown_suffix_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"'weights\.h5'.*\.npz.*\.pth"):
        torch_checkpoint.checkpoint_format("weights.h5")


def test_npz_is_read_without_torch(no_torch):
    state = read_state_dict(NPZ)
    assert state["classifier.weight"].shape == (10, 64)
    assert state["stem.0.weight"].dtype == np.float32
    assert not torch_checkpoint.torch_available()


def test_npz_with_a_module_prefix(tmp_path):
    path = tmp_path / "dp.npz"
    np.savez(path, **{f"module.{k}": v for k, v in STATE.items()})
    assert read_state_dict(path).keys() == STATE.keys()


@pytest.mark.parametrize("path", [ZIP, LEGACY])
def test_without_torch_a_torch_file_names_the_install(no_torch, path):
    with pytest.raises(ValueError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert TORCH_INSTALL in message and "\n" not in message
    with pytest.raises(ValueError, match=r"snas-tf\[torch\]"):
        torch_checkpoint.check_checkpoint(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="'.*nothing.npz' does not exist"):
        read_state_dict(tmp_path / "nothing.npz")


def test_a_directory_is_not_a_checkpoint(tmp_path):
    (tmp_path / "ckpt.pt").mkdir()
    with pytest.raises(ValueError, match="'.*ckpt.pt' is not a file"):
        read_state_dict(tmp_path / "ckpt.pt")


def test_a_corrupt_npz_is_refused(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="Cannot read .*bad.npz"):
        read_state_dict(path)


@pytest.mark.torch
@pytest.mark.parametrize("path", [ZIP, LEGACY])
def test_both_torch_formats_hold_the_npz_tensors(path):
    pytest.importorskip("torch")
    state = read_state_dict(path)
    reference = read_state_dict(NPZ)
    # The torch files leave the auxiliary head out (generate_fixtures.py).
    expected = {k for k in reference if not k.startswith("auxiliary_head.")}
    assert state.keys() == expected
    for name, array in state.items():
        assert array.dtype == reference[name].dtype, name
        np.testing.assert_array_equal(array, reference[name], err_msg=name)


@pytest.mark.torch
@pytest.mark.parametrize("legacy", [False, True])
def test_a_wrapped_data_parallel_torch_file(tmp_path, legacy):
    torch = pytest.importorskip("torch")
    state = {f"module.{k}": torch.from_numpy(v) for k, v in STATE.items()}
    path = tmp_path / "wrapped.pth.tar"
    torch.save(
        {"epoch": 7, "state_dict": state, "best_acc": 0.9},
        path,
        _use_new_zipfile_serialization=not legacy,
    )
    assert read_state_dict(path).keys() == STATE.keys()


@pytest.mark.torch
def test_half_precision_tensors_are_read_as_float32(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "half.pt"
    torch.save({"w": torch.ones(2, dtype=torch.bfloat16) / 3}, path)
    w = read_state_dict(path)["w"]
    assert w.dtype == np.float32 and w[0] == np.float32(0.333984375)


@pytest.mark.torch
def test_a_corrupt_torch_file_is_one_line(tmp_path):
    pytest.importorskip("torch")
    path = tmp_path / "weights.pth"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="Cannot read .*weights.pth") as info:
        read_state_dict(path)
    assert "\n" not in str(info.value)


@pytest.mark.torch
def test_a_pickled_model_is_not_unpickled(tmp_path):
    """weights_only=True: a whole pickled module (arbitrary classes) is
    refused, not run."""
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(ValueError, match="weights_only.*state_dict"):
        read_state_dict(path)
