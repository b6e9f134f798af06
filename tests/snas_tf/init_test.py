"""`import snas_tf` sets TensorFlow's environment defaults before TensorFlow
is imported; a user's own values win."""

import json
import os
import subprocess
import sys

import pytest

DEFAULTS = {
    "TF_ENABLE_ONEDNN_OPTS": "1",
    "TF_MKL_OPTIMIZE_PRIMITIVE_MEMUSE": "0",
}


def _environment_after_import(**preset):
    env = {k: v for k, v in os.environ.items() if k not in DEFAULTS}
    env.update(preset)
    # A fresh interpreter: prints the named variables after the import.
    code = (
        "import json, os, sys; import snas_tf; "
        "assert 'tensorflow' not in sys.modules; "
        "print(json.dumps({k: os.environ.get(k) for k in sys.argv[1:]}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *DEFAULTS],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_import_sets_the_defaults_without_importing_tensorflow():
    assert _environment_after_import() == DEFAULTS


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_a_users_own_setting_wins(name):
    theirs = "0" if DEFAULTS[name] == "1" else "1"
    assert _environment_after_import(**{name: theirs})[name] == theirs
