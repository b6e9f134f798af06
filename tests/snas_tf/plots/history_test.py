"""Tests for snas_tf.plots.history: a bad history.json is a one-line
error naming the file."""

import pytest
from plot_testing import write

from snas_tf import plots
from snas_tf.search_space import PRIMITIVES

BAD_HISTORIES = {
    "not_json": "{epochs: ",
    "a_list": "[]",
    "no_epochs_key": {"primitives": list(PRIMITIVES)},
    "empty_epochs": {"epochs": []},
    "record_not_object": {"epochs": [1, 2]},
    "bad_primitives": {"epochs": [{"loss": 1.0}], "primitives": "none"},
}


@pytest.mark.parametrize("content", BAD_HISTORIES.values(), ids=BAD_HISTORIES)
def test_bad_history_is_a_one_line_error_naming_the_file(tmp_path, content):
    path = write(tmp_path / "history.json", content)
    with pytest.raises(ValueError) as info:
        plots.curves_figure(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_empty_history_says_so(tmp_path):
    path = write(tmp_path / "history.json", {"epochs": []})
    with pytest.raises(ValueError, match="no epochs"):
        plots.load_history(path)


def test_missing_history_names_the_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        plots.load_history(tmp_path / "history.json")
