"""`snas import-torch`: an official checkpoint to a model dir that ships.

The checkpoint is the generator's tiny official `model_edge_all`
NetworkCIFAR (SNAS_moderate_edge_all, 4 channels, 5 cells, auxiliary
head), with the official eval-mode logits of a fixed batch
(`tests/reference/generate_fixtures.py`). The imported `model.keras` must
give them to the tolerance of docs/parity.md §1. Tests marked `torch`
read the torch.save forms of the same checkpoint and skip without
PyTorch (`make test-torch`).
"""

import json
import os
import pathlib
import sys

import keras
import numpy as np
import pytest

from snas_tf.config import RetrainConfig, load_config
from snas_tf.export import exporter
from snas_tf.genotype import GENOTYPES, get_genotype
from snas_tf.torch_checkpoint import TORCH_INSTALL
from snas_tf.trainers import cli, import_torch

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "reference/fixtures"
NPZ = FIXTURES / "import_checkpoint.npz"
ZIP = FIXTURES / "import_checkpoint.pt"
LEGACY = FIXTURES / "import_checkpoint_legacy.pt"
EXPECTED = FIXTURES / "import_expected.npz"
RTOL, ATOL = 1e-4, 1e-6  # docs/parity.md §1
SIZES = [
    "--config",
    "configs/cifar10_retrain.yaml",
    "--override",
    "child.channels=4",
    "--override",
    "child.num_layers=5",
]


def _argv(model_dir, checkpoint=NPZ, genotype="SNAS_moderate", extra=()):
    return [
        "import-torch",
        "--checkpoint",
        str(checkpoint),
        "--genotype",
        genotype,
        "--model-dir",
        str(model_dir),
        *SIZES,
        *extra,
    ]


def _fixture(path):
    if not path.is_file():
        pytest.fail(f"Missing fixture {path}; see generate_fixtures.py.")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _assert_official_logits(model_dir, fixture=EXPECTED, key="logits"):
    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"))
    arrays = _fixture(fixture)
    images = np.transpose(arrays["input"], (0, 2, 3, 1))
    reference = arrays[key]
    logits = np.asarray(model(images, training=False))
    bound = RTOL * np.abs(reference).max() + ATOL
    assert np.abs(logits - reference).max() <= bound
    return model


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("import") / "run"
    assert cli.main(_argv(model_dir)) == 0
    return model_dir


def test_npz_import_gives_the_official_logits(imported):
    model = _assert_official_logits(imported)
    # The auxiliary head was checked and left out of the shipped network.
    assert not [layer for layer in model.layers if layer.name.startswith("aux")]
    assert len(model.outputs) == 1


def test_the_model_dir_is_a_retraining_s(imported):
    assert sorted(os.listdir(imported)) == [
        "config.yaml",
        "genotype.json",
        "import.json",
        "model.keras",
    ]
    # edge_all: each node's edges by source, as our derivation lists them.
    assert (
        get_genotype(str(imported / "genotype.json"))
        == (GENOTYPES["SNAS_moderate"])
    )
    config = load_config([str(imported / "config.yaml")], (), RetrainConfig)
    assert (config.child.channels, config.child.num_layers) == (4, 5)
    assert config.child.network == "cifar" and config.child.auxiliary
    record = json.loads((imported / "import.json").read_text())
    assert record["format"] == "npz" and record["layout"] == "edge_all"
    assert record["auxiliary_head"] == "checked, left out"
    with np.load(NPZ) as data:
        counters = [k for k in data.files if k.endswith("num_batches_tracked")]
        assert record["batch_norm_counters_skipped"] == len(counters) > 0
        assert record["tensors_checked"] == len(data.files) - len(counters)
        aux = [k for k in data.files if k.startswith("auxiliary_head.")]
    assert record["auxiliary_head_tensors"] == len(aux) > 0
    assert record["official_genotype"]["reduce"][7] == ["sep_conv_5x5", 0]


def test_snas_export_reads_the_import(imported):
    """What `snas export --model-dir` loads, with its genotype check."""
    source = exporter.load_source(str(imported), genotype="SNAS_moderate")
    assert source.trained and source.config.child.channels == 4
    assert source.genotype == GENOTYPES["SNAS_moderate"]


@pytest.mark.slow
def test_snas_export_ships_the_import(imported, tmp_path):
    source = exporter.load_source(str(imported))
    report = exporter.export_model(
        source, str(tmp_path / "out"), ["saved_model"], latency_runs=1
    )
    (row,) = report["artifacts"]
    assert row["max_abs_diff"] <= exporter.FLOAT_TOLERANCE
    assert os.path.isdir(tmp_path / "out" / "saved_model")


def test_an_imagenet_darts_layout_checkpoint_imports(tmp_path):
    """The 8-edge layout (model.py) and the ImageNet network, whose
    auxiliary head keeps BatchNorm(768) there: the state_dict of
    docs/parity.md §1's ImageNet fixture, 10 classes."""
    fixture = FIXTURES / "imagenet_darts_moderate.npz"
    checkpoint = tmp_path / "imagenet.npz"
    prefix = "state/"
    np.savez(
        checkpoint,
        **{
            k.removeprefix(prefix): v
            for k, v in _fixture(fixture).items()
            if k.startswith(prefix)
        },
    )
    model_dir = tmp_path / "run"
    argv = _argv(model_dir, checkpoint, extra=["--layout", "darts"])
    argv[argv.index("configs/cifar10_retrain.yaml")] = (
        "configs/imagenet_mobile.yaml"
    )
    argv[argv.index("child.channels=4")] = "child.channels=8"
    argv[argv.index("child.num_layers=5")] = "child.num_layers=4"
    argv += ["--override", "data.dataset=cifar10"]  # 10 classes
    assert cli.main(argv) == 0
    _assert_official_logits(model_dir, fixture, "eval/logits")
    record = json.loads((model_dir / "import.json").read_text())
    assert record["layout"] == "darts"
    assert record["auxiliary_head"] == "checked, left out"


def test_a_rerun_overwrites_its_own_import(imported, capsys):
    before = (imported / "import.json").read_text()
    assert cli.main(_argv(imported)) == 0
    assert (imported / "import.json").read_text() == before
    checked = json.loads(before)["tensors_checked"]
    assert f"Tensors: {checked} checked;" in capsys.readouterr().out


def _fail(argv, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "changes, named",
    [
        # Another genotype: the first edge whose tensors differ.
        (
            {"genotype": "SNAS_mild"},
            "tensor 'cells.0._ops.0.op.1.weight' has shape (4, 1, 5, 5) in "
            "the state_dict; layer 'cell0_node0_edge0_sep_conv_3x3_dw1' "
            "needs (4, 1, 3, 3)",
        ),
        # Another class count (cifar100): the first classifier, the
        # auxiliary head's, with both shapes.
        (
            {"extra": ["--override", "data.dataset=cifar100"]},
            "tensor 'auxiliary_head.classifier.weight' has shape (10, 768) "
            "in the state_dict; layer 'aux_classifier' needs (100, 768)",
        ),
        # Another width: the stem already differs.
        (
            {"extra": ["--override", "child.channels=6"]},
            "tensor 'stem.0.weight' has shape (12, 3, 3, 3) in the "
            "state_dict; layer 'stem_conv' needs (18, 3, 3, 3)",
        ),
        # Another cell count: the reductions move.
        (
            {"extra": ["--override", "child.num_layers=6"]},
            "tensor 'cells.1.preprocess0.op.1.weight' has shape (8, 12, 1, 1)",
        ),
        # The 8-edge layout of the same genotype numbers edges otherwise.
        (
            {"extra": ["--layout", "darts"]},
            "tensor 'cells.0._ops.6.op.1.weight' (4, 1, 3, 3) for layer "
            "'cell0_node3_edge0_sep_conv_3x3_dw1' is missing",
        ),
        # Our genotype forms do not keep the official edge order.
        (
            {"genotype": GENOTYPES["SNAS_moderate"].to_string()},
            "needs the official edge order",
        ),
        ({"genotype": "SNAS_huge"}, "official edge order of 'SNAS_huge'"),
        ({"checkpoint": "{tmp}/missing.npz"}, "does not exist"),
        ({"checkpoint": "{tmp}"}, "is a directory; expected a file"),
        ({"checkpoint": "{tmp}/weights.h5"}, "Expected a name ending in"),
        ({"checkpoint": "{tmp}/bad.npz"}, "Cannot read"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path, capsys, changes, named
):
    (tmp_path / "weights.h5").write_bytes(b"hdf5")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    model_dir = tmp_path / "run"
    kwargs = {
        k: (v.format(tmp=tmp_path) if isinstance(v, str) else v)
        for k, v in changes.items()
    }
    err = _fail(_argv(model_dir, **kwargs), capsys)
    assert err.startswith("snas import-torch: error: ")
    assert named in err
    assert not model_dir.exists()


def test_a_model_dir_of_something_else_is_refused(tmp_path, capsys):
    model_dir = tmp_path / "retrain"
    model_dir.mkdir()
    (model_dir / "history.json").write_text("{}")
    err = _fail(_argv(model_dir), capsys)
    assert "holds ['history.json']" in err
    assert os.listdir(model_dir) == ["history.json"]


@pytest.mark.parametrize("checkpoint", [ZIP, LEGACY])
def test_without_torch_a_torch_file_names_the_install(
    tmp_path, capsys, monkeypatch, checkpoint
):
    def no_job(*_, **__):
        raise AssertionError("the job ran before PyTorch was checked")

    # Checked by the command line before the job (and TensorFlow) starts.
    monkeypatch.setattr(import_torch, "run_import_torch", no_job)
    monkeypatch.setitem(sys.modules, "torch", None)
    err = _fail(_argv(tmp_path / "run", checkpoint), capsys)
    assert TORCH_INSTALL in err
    assert not (tmp_path / "run").exists()


@pytest.mark.torch
@pytest.mark.parametrize("checkpoint", [ZIP, LEGACY])
def test_torch_files_import_to_the_official_logits(tmp_path, checkpoint):
    pytest.importorskip("torch")
    model_dir = tmp_path / "run"
    assert cli.main(_argv(model_dir, checkpoint)) == 0
    _assert_official_logits(model_dir)
    record = json.loads((model_dir / "import.json").read_text())
    assert record["format"] == "torch" and record["auxiliary_head"] == "none"
    config = load_config([str(model_dir / "config.yaml")], (), RetrainConfig)
    assert not config.child.auxiliary
