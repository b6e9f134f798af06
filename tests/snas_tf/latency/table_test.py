"""The latency table's file, its checks, imported timings and resume."""

import dataclasses
import json

import pytest
from latency_testing import TINY_TARGET, hand_made_table

from snas_tf.latency.calibration import part_count
from snas_tf.latency.cost import predict_latency
from snas_tf.latency.entries import required_entries
from snas_tf.latency.partial import PartialTimings
from snas_tf.latency.table import (
    check_table,
    load_table,
    read_timings,
    table_clock,
)


def test_a_saved_table_loads_and_passes_its_checks(tmp_path):
    path = tmp_path / "table.json"
    table = hand_made_table(path=path)
    loaded = check_table(load_table(path), TINY_TARGET)
    assert loaded.entries == table.entries
    data = json.loads(path.read_text())
    assert data["unit"] == "us"
    assert data["target"]["reduction_cells"] == [1, 2]
    assert data["target"]["primitives"] == list(TINY_TARGET.primitives)
    assert set(data["entries"]) == set(required_entries(TINY_TARGET))


def test_a_table_without_a_clock_is_a_wall_clock_one(tmp_path):
    """Tables written before `runtime.clock` existed still load."""
    table = hand_made_table(path=tmp_path / "t.json")
    assert "clock" not in table.runtime
    assert table_clock(check_table(table, TINY_TARGET).runtime) == "wall"
    assert table_clock({**table.runtime, "clock": "cpu"}) == "cpu"


def test_a_calibration_scales_every_timing_and_round_trips(tmp_path):
    path = tmp_path / "t.json"
    raw = hand_made_table(path=path)
    calibrated = dataclasses.replace(raw, calibration={"scale": 1.5, "n": 3})
    calibrated.save(path)
    loaded = check_table(load_table(path), TINY_TARGET)
    assert loaded.calibration == {"scale": 1.5, "n": 3}
    assert loaded.latency_us(_ID) == pytest.approx(1.5 * raw.latency_us(_ID))
    assert loaded.uncalibrated().latency_us(_ID) == raw.latency_us(_ID)
    want = predict_latency(raw, TINY_TARGET, _GENOTYPE)["total_us"]
    got = predict_latency(loaded, TINY_TARGET, _GENOTYPE)["total_us"]
    assert got == pytest.approx(1.5 * want)


def test_a_per_part_term_is_added_once_per_part(tmp_path):
    raw = hand_made_table()
    calibrated = dataclasses.replace(
        raw, calibration={"scale": 2.0, "per_part_us": -1.5}
    )
    parts = part_count(TINY_TARGET, _GENOTYPE)
    want = predict_latency(raw, TINY_TARGET, _GENOTYPE)["total_us"]
    got = predict_latency(calibrated, TINY_TARGET, _GENOTYPE)["total_us"]
    assert parts > 3 and got == pytest.approx(2 * want - 1.5 * parts)


@pytest.mark.parametrize(
    "calibration",
    [{"scale": 0}, {"scale": "x"}, [1], {"scale": 1, "per_part_us": "x"}],
)
def test_a_bad_calibration_is_refused(tmp_path, calibration):
    path = tmp_path / "t.json"
    data = hand_made_table().to_dict()
    path.write_text(json.dumps({**data, "calibration": calibration}))
    with pytest.raises(ValueError, match="finite 'scale' > 0"):
        load_table(path)


def _edited(tmp_path, edit):
    path = tmp_path / "table.json"
    hand_made_table(path=path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return load_table(path)


_ID = "op-sep_conv_3x3-c4-h8-s1"
_GENOTYPE = "normal=sep_conv_3x3:0|skip_connect:2;reduce=sep_conv_3x3:1|-"


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda d: d["target"].update(channels=8),
            r"target.channels is 8, but the target network \(the search\) "
            "has 4",
        ),
        (
            lambda d: d["target"].update(primitives=["none", "skip_connect"]),
            "target.primitives is",
        ),
        (lambda d: d["entries"].pop(_ID), f"missing entry '{_ID}'"),
        (
            lambda d: d["entries"][_ID].update(latency_us=-1.0),
            f"entry '{_ID}' has latency_us -1.0; expected a finite",
        ),
        (
            lambda d: d["entries"][_ID].update(latency_us=float("nan")),
            f"entry '{_ID}' has latency_us nan",
        ),
        (
            lambda d: d["entries"][_ID].update(latency_us="fast"),
            f"entry '{_ID}' has latency_us 'fast'",
        ),
        (
            lambda d: d["runtime"].update(format="fp16"),
            r"runtime.format is 'fp16'; expected one of \('fp32', 'int8'\)",
        ),
        (
            lambda d: d["runtime"].update(clock="gpu"),
            r"runtime.clock is 'gpu'; expected one of \('wall', 'cpu'\)",
        ),
    ],
)
def test_bad_tables_are_refused_naming_the_entry(tmp_path, edit, message):
    table = _edited(tmp_path, edit)
    with pytest.raises(ValueError, match=message) as error:
        check_table(table, TINY_TARGET, "the search")
    assert "\n" not in str(error.value)


def test_a_table_of_another_space_is_refused(tmp_path):
    table = hand_made_table(path=tmp_path / "t.json")
    other = dataclasses.replace(TINY_TARGET, num_nodes=3)
    with pytest.raises(ValueError, match="target.num_nodes is 2"):
        check_table(table, other)


@pytest.mark.parametrize(
    "text, message",
    [
        ("{", "not valid JSON"),
        ('{"format_version": 2}', "format_version is 2; expected 1"),
        ('{"format_version": 1, "unit": "ms"}', "unit is 'ms'"),
    ],
)
def test_malformed_files_are_refused(tmp_path, text, message):
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_table(path)


def test_timings_import_from_csv_and_json(tmp_path):
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("id,latency_us\na,1.5\nb, 20\n\n")
    assert read_timings(csv_path) == {"a": 1.5, "b": 20.0}
    json_path = tmp_path / "t.json"
    json_path.write_text(json.dumps({"latency_us": {"a": 1.5, "b": 20}}))
    assert read_timings(json_path) == {"a": 1.5, "b": 20.0}


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("t.csv", "name,ms\na,1\n", "the header 'id,latency_us'"),
        ("t.csv", "id,latency_us\na,1\na,2\n", "'a' appears twice"),
        ("t.csv", "id,latency_us\na,-2\n", "entry 'a' has latency_us -2.0"),
        ("t.csv", "id,latency_us\na,inf\n", "entry 'a' has latency_us inf"),
        ("t.csv", "id,latency_us\na\n", "row 2 has 1 fields"),
        ("t.json", '{"a": 1}', 'must hold {"latency_us"'),
        ("t.txt", "a 1", "unknown suffix '.txt'"),
    ],
)
def test_bad_timings_files_are_refused(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_timings(path)


def test_partial_timings_resume_and_refuse_other_settings(tmp_path):
    path = tmp_path / "t.json.partial"
    partial = PartialTimings(path, {"threads": 1})
    assert partial.load() == {}
    partial.start()
    partial.add("a", 1.0)
    partial.add("b", 2.0)
    # A kill mid-write leaves a torn line: that entry is timed again.
    with open(path, "a") as f:
        f.write('{"id": "c", "lat')
    again = PartialTimings(path, {"threads": 1})
    assert again.load() == {"a": 1.0, "b": 2.0}
    again.start()  # keeps what is there
    assert again.load() == {"a": 1.0, "b": 2.0}
    with pytest.raises(ValueError, match="with threads=1, not 2"):
        PartialTimings(path, {"threads": 2}).load()
    again.remove()
    assert not path.exists()
