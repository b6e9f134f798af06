"""A catalogue of bad inputs to the `snas` CLI.

Each fails with a non-zero status and one stderr line that names the bad
value, and leaves every file already there (model dirs, export outputs,
configs) byte for byte as it was, and creates none. Most cases run
in-process through `cli.main`; three run the `snas` console script, so no
traceback reaches a user's terminal. Last, bad requests to an exported
SavedModel's signatures: corrupt bytes, wrong shapes, and images whose
headers declare a huge size.
"""

import hashlib
import json
import os
import re
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf
from image_bombs import jpeg_declaring, png_declaring
from testing_utils import SNAS, tiny_child

from snas_tf.config import DataConfig, RetrainConfig, load_config, save_config
from snas_tf.export import savedmodel
from snas_tf.genotype import get_genotype
from snas_tf.trainers import cli

SEARCH = [
    "model.channels=4",
    "model.num_cells=3",
    "model.num_nodes=2",
    "search.epochs=1",
    "search.batch_size=16",
    "data.dataset=digits",
    "data.image_size=8",
    "data.max_examples=96",
    "runtime.verbose=0",
]
RETRAIN = [
    "child.channels=4",
    "child.num_layers=3",
    "child.auxiliary=false",
    "train.epochs=1",
    "train.batch_size=8",
    "data.dataset=digits",
    "data.image_size=8",
    "data.max_examples=48",
    "runtime.verbose=0",
]
TUNE_RETRAIN = [
    "--retrain-override=child.num_layers=3",
    "--retrain-override=child.channels=4",
    "--retrain-override=data.dataset=digits",
    "--retrain-override=data.image_size=8",
]
WEIGHTS = "ckpt-00000004-0-4.weights.h5"
STATE = json.dumps(
    {
        "epoch": 0,
        "step": 4,
        "iterations": 4,
        "weights": WEIGHTS,
        "seed_states": [[0, 4]],
        "epochs": [],
        "records": [],
    }
)


def _overrides(keys):
    return [f"--override={key}" for key in keys]


def search(model_dir, *extra):
    return ["search", f"--model-dir={model_dir}", *_overrides(SEARCH), *extra]


def retrain(model_dir, *extra):
    return [
        "retrain",
        f"--model-dir={model_dir}",
        "--genotype=SNAS_mild",
        *_overrides(RETRAIN),
        *extra,
    ]


def _write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


def _interrupted_run(path, config, state=STATE, weights=b"\x89HDF\r\n\x1a\n"):
    """A model_dir as an interrupted job leaves it: config, genotype,
    a checkpoint, TensorBoard logs. The weights file is only an HDF5
    signature, so a resume fails when it restores them."""
    save_config(config, path / "config.yaml")
    _write(path / "genotype.json", get_genotype("SNAS_mild").to_json(2) + "\n")
    _write(path / "checkpoints" / "state.json", state)
    if weights is not None:
        _write(path / "checkpoints" / WEIGHTS, weights)
    _write(path / "logs" / "train" / "events.out.tfevents.1", b"\0events")


def make_world(root):
    """Everything the cases point at, under one root to hash."""
    retrain_config = load_config([], RETRAIN, RetrainConfig)
    _interrupted_run(root / "retrain", retrain_config)
    _interrupted_run(
        root / "corrupt_state", retrain_config, state='{"epoch": 0, "st'
    )
    _interrupted_run(root / "no_weights", retrain_config, weights=None)
    _interrupted_run(root / "search", load_config([], SEARCH), state="\0\0")
    _write(root / "out" / "report.json", '{"artifacts": []}\n')
    _write(root / "out" / "model_fp32.tflite", b"TFL3 earlier export")
    (root / "empty").mkdir()
    (root / "images" / "train" / "cat").mkdir(parents=True)
    _write(root / "bad.yaml", "search:\n  epochs: [1,\n")
    _write(root / "list.yaml", "- search.epochs=1\n")
    _write(root / "genotype.json", '{"format_version": 1, "normal": [')
    return root


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


def snapshot(root):
    """Every directory and file under `root`: relative path -> sha256 of
    its bytes (None for a directory)."""
    out = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            out[os.path.relpath(os.path.join(directory, name), root)] = None
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(path, root)] = digest
    return out


# (argv, text the error line must contain); "{w}" is the `world` root.
CASES = {
    "override_unknown_key": (
        search("{w}/search", "--override=search.epoch=1"),
        "'search.epoch'",
    ),
    "override_wrong_type": (
        search("{w}/search", "--override=search.epochs=abc"),
        "got 'abc'",
    ),
    "override_without_equals": (
        search("{w}/search", "--override=search.epochs"),
        "'search.epochs'",
    ),
    "override_invalid_yaml": (
        search("{w}/search", "--override=model.primitives=[none, max"),
        "'model.primitives=[none, max'",
    ),
    "missing_config_file": (
        search("{w}/search", "--config={w}/nope.yaml"),
        "{w}/nope.yaml",
    ),
    "invalid_yaml_config": (
        search("{w}/search", "--config={w}/bad.yaml"),
        "{w}/bad.yaml",
    ),
    "config_is_a_list": (
        search("{w}/search", "--config={w}/list.yaml"),
        "{w}/list.yaml",
    ),
    "unknown_genotype_name": (
        retrain("{w}/retrain", "--genotype=SNAS_bold"),
        "'SNAS_bold'",
    ),
    "malformed_genotype_json": (
        retrain("{w}/retrain", '--genotype={"normal": [["sep_conv_3x3"'),
        """'{"normal": [["sep_conv_3x3"'""",
    ),
    "malformed_genotype_file": (
        retrain("{w}/retrain", "--genotype={w}/genotype.json"),
        "{w}/genotype.json",
    ),
    "genotype_unknown_op": (
        retrain(
            "{w}/retrain",
            "--genotype=normal=conv_9x9:0,skip_connect:1|skip_connect:0"
            ";reduce=max_pool_3x3:0,max_pool_3x3:1|skip_connect:2",
        ),
        "'conv_9x9'",
    ),
    "genotype_file_missing": (
        retrain("{w}/retrain", "--genotype={w}/runs/genotype.json"),
        "{w}/runs/genotype.json",
    ),
    "unknown_dataset": (
        search("{w}/search", "--override=data.dataset=no_such_dataset"),
        "'no_such_dataset'",
    ),
    "image_folder_missing": (
        search(
            "{w}/search",
            "--override=data.dataset=image_folder",
            "--override=data.data_dir={w}/no_images",
        ),
        "{w}/no_images",
    ),
    "image_folder_empty": (
        search(
            "{w}/search",
            "--override=data.dataset=image_folder",
            "--override=data.data_dir={w}/images",
        ),
        "{w}/images",
    ),
    "unknown_augment": (
        search("{w}/search", "--override=data.augment=autoaugment"),
        "'autoaugment'",
    ),
    "batch_larger_than_data": (
        search("{w}/new", "--override=search.batch_size=1000"),
        "1000",
    ),
    "negative_epochs": (
        search("{w}/new", "--override=search.epochs=-1"),
        "'search.epochs' must be >= 1, got -1",
    ),
    "zero_epochs": (
        retrain("{w}/new", "--override=train.epochs=0"),
        "'train.epochs' must be >= 1, got 0",
    ),
    "unknown_lr_schedule": (
        retrain("{w}/new", "--override=train.lr_schedule=step"),
        "'step'",
    ),
    "search_resume_corrupt_state": (
        search("{w}/search"),
        "{w}/search/checkpoints/state.json",
    ),
    "retrain_resume_corrupt_state": (
        retrain("{w}/corrupt_state"),
        "{w}/corrupt_state/checkpoints/state.json",
    ),
    "retrain_resume_missing_weights": (
        retrain("{w}/no_weights"),
        f"'{WEIGHTS}', which is missing",
    ),
    "retrain_resume_garbage_weights": (
        retrain("{w}/retrain"),
        f"{{w}}/retrain/checkpoints/{WEIGHTS}",
    ),
    "resume_under_another_config": (
        retrain("{w}/retrain", "--override=train.epochs=2"),
        "train.epochs: 1 -> 2",
    ),
    "unknown_export_format": (
        ["export", "--out={w}/out", "--genotype=SNAS_mild"]
        + ["--formats", "saved_model", "tflite_int4"],
        "'tflite_int4'",
    ),
    "export_without_a_model": (
        ["export", "--out={w}/out"],
        "--model-dir",
    ),
    "export_model_dir_without_model": (
        ["export", "--out={w}/out", "--model-dir={w}/retrain"],
        "no model.keras",
    ),
    "tune_budget_below_smallest_network": (
        ["tune", "--model-dir={w}/new", "--max-params=10", *TUNE_RETRAIN]
        + _overrides(SEARCH),
        "--max-params 10",
    ),
    "tune_without_budget": (
        ["tune", "--model-dir={w}/new", *_overrides(SEARCH)],
        "--max-params",
    ),
    "plot_without_outputs": (
        ["plot", "--model-dir={w}/empty"],
        "{w}/empty",
    ),
}
# argparse's own errors: usage lines, then the error line.
ARGPARSE_CASES = {
    "unknown_subcommand": (["serch", "--model-dir={w}/search"], "'serch'"),
    "unknown_flag": (search("{w}/search", "--epochs=3"), "--epochs=3"),
    "summary_unknown_network": (
        ["summary", "--genotype=SNAS_mild", "--network=mobile"],
        "'mobile'",
    ),
    "tune_budget_not_a_count": (
        ["tune", "--model-dir={w}/new", "--max-params=lots"],
        "'lots'",
    ),
}


def _format(case, root):
    argv, named = case
    return [a.replace("{w}", str(root)) for a in argv], named.replace(
        "{w}", str(root)
    )


def run_cli(argv, capsys):
    """(exit status, stderr lines) of `snas ARGV` run in-process."""
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_is_one_line_naming_it_and_touches_nothing(
    world, capsys, case
):
    argv, named = _format(CASES[case], world)
    before = snapshot(world)
    code, lines = run_cli(argv, capsys)
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"snas {argv[0]}: error: "), lines
    assert named in lines[0]
    assert snapshot(world) == before


@pytest.mark.parametrize("case", ARGPARSE_CASES, ids=str)
def test_argparse_errors_name_the_value_and_touch_nothing(world, capsys, case):
    argv, named = _format(ARGPARSE_CASES[case], world)
    before = snapshot(world)
    code, lines = run_cli(argv, capsys)
    assert code == 2
    assert re.match(r"snas( \w+)?: error: ", lines[-1]) and named in lines[-1]
    assert not any("Traceback" in line for line in lines)
    assert snapshot(world) == before


@pytest.mark.parametrize("case", ARGPARSE_CASES, ids=str)
def test_argparse_errors_are_one_line(world, capsys, case):
    argv, _ = _format(ARGPARSE_CASES[case], world)
    _, lines = run_cli(argv, capsys)
    assert len(lines) == 1, lines


SCRIPT_CASES = (
    "override_invalid_yaml",
    "genotype_file_missing",
    "retrain_resume_corrupt_state",
)


@pytest.fixture(scope="module", autouse=True)
def scripts(tmp_path_factory):
    """The `snas` console script on `SCRIPT_CASES`, each in a world of its
    own, started with the module: each process starts TensorFlow (~8 s of
    CPU here), so they run while the in-process cases do."""
    started = {}
    for case in SCRIPT_CASES:
        world = make_world(tmp_path_factory.mktemp(case))
        argv, named = _format(CASES[case], world)
        process = subprocess.Popen(
            [SNAS, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )
        started[case] = (process, world, snapshot(world), named)
    yield started
    for process, *_ in started.values():
        process.kill()
        process.communicate()


@pytest.mark.parametrize("case", SCRIPT_CASES)
def test_console_script_prints_one_line_and_no_traceback(scripts, case):
    """The real `snas` process: the error line is all of stderr
    (TensorFlow's start-up lines are filtered out)."""
    process, world, before, named = scripts[case]
    stdout, stderr = process.communicate(timeout=300)
    lines = stderr.splitlines()
    assert process.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1 and named in lines[0], stderr
    assert stdout == ""
    assert snapshot(world) == before


# Bad values the `snas` console script rejects before TensorFlow loads:
# one per subcommand, one per path argument and per path config key.
EARLY_CASES = {
    "search_config_value": (
        search("{w}/new", "--override=runtime.intra_op_threads=-1"),
        "'runtime.intra_op_threads' must be >= 0, got -1",
    ),
    "retrain_config_value": (
        retrain("{w}/new", "--override=child.channels=-12"),
        "'child.channels' must be an even int >= 2, got -12",
    ),
    "export_threads": (
        ["export", "--out={w}/new", "--genotype=SNAS_mild", "--threads=0"],
        "--threads: expected an int >= 1, got '0'",
    ),
    "summary_channels": (
        ["summary", "--genotype=SNAS_mild", "--channels=-12"],
        "--channels: expected an even int >= 2, got '-12'",
    ),
    "plot_model_dir_is_a_file": (
        ["plot", "--model-dir={w}/bad.yaml"],
        "--model-dir '{w}/bad.yaml' is a file; expected a directory",
    ),
    "demo_model_dir_is_a_file": (
        ["demo", "--model-dir={w}/bad.yaml"],
        "--model-dir '{w}/bad.yaml' is a file; expected a directory",
    ),
    "tune_retrain_config_value": (
        ["tune", "--model-dir={w}/new", "--max-params=3M"]
        + ["--retrain-override=child.channels=3"],
        "'child.channels' must be an even int >= 2, got 3",
    ),
    "config_is_a_directory": (
        search("{w}/new", "--config={w}/empty"),
        "--config '{w}/empty' is a directory; expected a file",
    ),
    "retrain_config_is_a_directory": (
        ["tune", "--model-dir={w}/new", "--max-params=3M"]
        + ["--retrain-config={w}/empty"],
        "--retrain-config '{w}/empty' is a directory; expected a file",
    ),
    "output_model_dir_is_a_file": (
        search("{w}/bad.yaml"),
        "--model-dir '{w}/bad.yaml' is a file; expected a directory",
    ),
    "output_model_dir_inside_a_file": (
        retrain("{w}/bad.yaml/run"),
        "--model-dir '{w}/bad.yaml/run' is inside '{w}/bad.yaml', which is "
        "a file",
    ),
    "input_model_dir_missing": (
        ["export", "--out={w}/new", "--model-dir={w}/nope"],
        "--model-dir '{w}/nope' does not exist",
    ),
    "export_out_is_a_file": (
        ["export", "--out={w}/bad.yaml", "--genotype=SNAS_mild"],
        "--out '{w}/bad.yaml' is a file; expected a directory",
    ),
    "genotype_is_a_directory": (
        ["summary", "--genotype={w}/empty/"],
        "--genotype '{w}/empty/' is a directory; expected a file",
    ),
    "data_dir_is_a_file": (
        search("{w}/new", "--override=data.data_dir={w}/bad.yaml"),
        "'data.data_dir': '{w}/bad.yaml' is a file; expected a directory",
    ),
    "manual_dir_is_a_file": (
        retrain("{w}/new", "--override=data.manual_dir={w}/bad.yaml"),
        "'data.manual_dir': '{w}/bad.yaml' is a file; expected a directory",
    ),
    "child_genotype_is_a_directory": (
        retrain("{w}/new", "--override=child.genotype={w}/empty/"),
        "'child.genotype': '{w}/empty/' is a directory; expected a file",
    ),
    "unknown_search_mode": (
        search("{w}/new", "--override=search.mode=darts_bilevel"),
        "'search.mode' must be one of ('snas', 'darts', "
        "'darts_single_level'), got 'darts_bilevel'",
    ),
    "unknown_derivation_rule": (
        search("{w}/new", "--override=search.derivation_rule=top3"),
        "'search.derivation_rule' must be one of ('edge_all', 'top2'), got "
        "'top3'",
    ),
    "arch_fraction_out_of_range": (
        search("{w}/new", "--override=search.arch_fraction=1.0"),
        "'search.arch_fraction' must be in (0, 1), got 1.0",
    ),
}


@pytest.fixture(scope="module")
def early_scripts(tmp_path_factory):
    """The `snas` console script on `EARLY_CASES`, all started at once,
    with a `tensorflow` package first on the path that fails to import:
    a case that reaches TensorFlow fails with its traceback."""
    fake = tmp_path_factory.mktemp("fake_tf")
    _write(
        fake / "tensorflow" / "__init__.py",
        "raise ImportError('TensorFlow imported before the check')\n",
    )
    env = dict(os.environ, PYTHONPATH=str(fake))
    started = {}
    for case in EARLY_CASES:
        world = make_world(tmp_path_factory.mktemp(case))
        argv, named = _format(EARLY_CASES[case], world)
        process = subprocess.Popen(
            [SNAS, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        started[case] = (process, world, snapshot(world), named)
    yield started
    for process, *_ in started.values():
        process.kill()
        process.communicate()


@pytest.mark.parametrize("case", EARLY_CASES)
def test_console_script_rejects_a_bad_value_before_tensorflow(
    early_scripts, case
):
    process, world, before, named = early_scripts[case]
    stdout, stderr = process.communicate(timeout=300)
    lines = stderr.splitlines()
    assert process.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1 and named in lines[0], stderr
    assert lines[0].startswith("snas "), stderr
    assert stdout == ""
    assert snapshot(world) == before


@pytest.fixture(scope="module")
def signatures(tmp_path_factory):
    """The two serving signatures of a tiny exported SavedModel (8x8)."""
    keras.utils.set_random_seed(0)
    model = tiny_child("SNAS_mild", 3, 8)
    path = tmp_path_factory.mktemp("export") / "saved_model"
    data = DataConfig(dataset="digits", image_size=8)
    savedmodel.export_saved_model(model, path, data)
    loaded = tf.saved_model.load(str(path))
    return loaded, loaded.signatures


def _jpeg(seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (20, 28, 3))
    return tf.io.encode_jpeg(pixels.astype("uint8")).numpy()


def test_serving_bytes_rejects_corrupt_image_bytes(signatures):
    _, fns = signatures
    fn = fns[savedmodel.SERVING_BYTES]
    good = _jpeg()
    with pytest.raises(tf.errors.InvalidArgumentError, match="Invalid JPEG"):
        fn(image_bytes=tf.constant([good, good[: len(good) // 2]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="Invalid GIF"):
        fn(image_bytes=tf.constant([b"GIF89a" + b"\0" * 20]))
    assert fn(image_bytes=tf.constant([good]))["logits"].shape == (1, 3)


@pytest.mark.parametrize(
    "shape",
    [(1, 16, 16, 3), (1, 9, 9, 3), (8, 8, 3), (2, 8, 8, 1)],
    ids=str,
)
def test_serving_default_rejects_a_wrong_image_shape(signatures, shape):
    # (1, 16, 16, 3) used to return logits: the network pools globally.
    _, fns = signatures
    fn = fns[savedmodel.SERVING_DEFAULT]
    received = ",".join(map(str, shape))
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=rf"tensor images \[{received}\] is not compatible with "
        r"expected shape \[\?,8,8,3\]",
    ):
        fn(images=tf.zeros(shape))
    assert fn(images=tf.zeros((2, 8, 8, 3)))["logits"].shape == (2, 3)


@pytest.mark.parametrize(
    "bomb, width, height",
    [
        (png_declaring(20000, 20000), 20000, 20000),
        (jpeg_declaring(20000, 20000), 20000, 20000),
        (png_declaring(4097, 4096), 4097, 4096),  # one column over
    ],
    ids=["png", "jpeg", "png_just_over"],
)
def test_serving_bytes_refuses_a_huge_header_before_decoding(
    signatures, bomb, width, height
):
    """A few hundred bytes that declare more than 4096x4096 pixels (the
    default limit) are refused by index, size and limit. Decoding them
    would fail differently (their pixel data is cut short)."""
    _, fns = signatures
    fn = fns[savedmodel.SERVING_BYTES]
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=rf"image_bytes\[1\] declares {width}x{height} pixels \(width "
        rf"x height\), over the limit of {4096 * 4096} pixels",
    ):
        fn(image_bytes=tf.constant([_jpeg(), bomb, _jpeg(1)]))


@pytest.mark.parametrize(
    "bad, message",
    [
        (png_declaring(20000, 20000)[:20], "PNG"),  # cut inside the header
        (jpeg_declaring(20000, 20000)[:30], "JPEG"),
        (b"\x89PNG\r\n\x1a\n", "PNG"),
        (b"BM" + b"\0" * 10, "bmp"),
    ],
    ids=["png_cut", "jpeg_cut", "png_signature_only", "bmp_cut"],
)
def test_serving_bytes_short_headers_still_fail_as_invalid(
    signatures, bad, message
):
    _, fns = signatures
    fn = fns[savedmodel.SERVING_BYTES]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        fn(image_bytes=tf.constant([_jpeg(), bad]))
    assert fn(image_bytes=tf.constant([_jpeg()]))["logits"].shape == (1, 3)
