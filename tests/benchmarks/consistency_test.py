"""benchmarks/consistency.py: the random cells' parameter rule, the
table, and a quick run on tiny digits that a second run skips."""

import json
import pathlib
import sys

import pytest

from snas_tf.genotype import get_genotype
from snas_tf.search_space import SearchSpace

sys.path.insert(0, str(pathlib.Path(__file__).parents[2] / "benchmarks"))
import consistency  # noqa: E402

SPACE = SearchSpace(("none", "max_pool_3x3", "skip_connect", "sep_conv_3x3"), 2)
# 1 epoch each, 2 cells of 4 channels at 8x8, batches of 2 of 24 digits.
TINY = [
    "--quick",
    "--search-epochs=1",
    "--retrain-epochs=1",
    "--override=model.num_cells=2",
    "--override=model.channels=4",
    "--override=model.num_nodes=2",
    f"--override=model.primitives=[{','.join(SPACE.primitives)}]",
    "--override=data.image_size=8",
    "--override=search.batch_size=2",
    "--override=data.max_examples=24",
    "--retrain-override=child.num_layers=2",
    "--retrain-override=child.channels=4",
    "--retrain-override=data.image_size=8",
    "--retrain-override=train.batch_size=2",
    "--retrain-override=data.max_examples=24",
]


def _convs(genotype):
    return sum(
        op == "sep_conv_3x3"
        for cell in ("normal", "reduce")
        for _, _, op in genotype.edges(cell)
    )


def test_random_cells_match_the_parameter_target_and_skip_the_excluded():
    # A stand-in count: 100 per conv; the target 400 keeps 4 convs ±10%.
    excluded = get_genotype(
        "normal=sep_conv_3x3:0,sep_conv_3x3:1|sep_conv_3x3:0;"
        "reduce=sep_conv_3x3:0|-"
    )
    genotypes, draws = consistency.sample_matched(
        400, 6, SPACE, lambda g: 100 * _convs(g), 0, exclude=[excluded]
    )
    assert len(genotypes) == len({g.to_string() for g in genotypes}) == 6
    assert all(_convs(g) == 4 for g in genotypes)
    assert excluded not in genotypes
    assert draws >= 6
    again, _ = consistency.sample_matched(
        400, 6, SPACE, lambda g: 100 * _convs(g), 0, exclude=[excluded]
    )
    assert again == genotypes


def test_a_parameter_target_out_of_reach_is_refused():
    # 10 edges hold at most 1000: 2000 is never within ±10%.
    with pytest.raises(ValueError, match="kept 0 of 1 within ±10% of 2000"):
        consistency.sample_matched(2000, 1, SPACE, lambda g: 100 * _convs(g), 0)


def _units(seeds, num_random):
    units = {}
    for seed in seeds:
        for mode, acc in (("snas", 0.9), ("darts", 0.5)):
            units[f"search-{mode}-s{seed}"] = {
                "genotype": f"{mode}{seed}",
                "val_accuracy": acc,
                "val_child_accuracy": acc - 0.1 * seed,
                "entropy_normal": 1.0,
                "entropy_reduce": 0.5,
                "weightless_normal": 9,
                "weightless_reduce": 8,
                "seconds": 10,
            }
            units[f"retrain-{mode}-s{seed}"] = {
                "genotype": f"{mode}|{seed}",
                "val_accuracy": acc,
                "parameters": 1000,
                "seconds": 5,
            }
        units[f"sample-s{seed}"] = {
            "target_parameters": 1000,
            "draws": 3,
            "genotypes": [],
            "seconds": 1,
        }
        for k in range(num_random):
            units[f"retrain-random{k}-s{seed}"] = {
                "genotype": f"r{k}",
                "val_accuracy": 0.8 + 0.15 * k,
                "parameters": 1050,
                "seconds": 5,
            }
    return units


def test_aggregate_takes_mean_and_std_over_seeds_and_counts_the_wins():
    results = consistency.aggregate(_units([0, 1], 2), [0, 1], 2)
    child = results["rows"]["snas"]["child_accuracy"]
    assert child == pytest.approx({"mean": 0.85, "std": 0.05, "n": 2})
    random = results["rows"]["random"]["retrained_accuracy"]
    assert random["n"] == 4
    # SNAS 0.9 beats 0.8, not 0.95, in each seed.
    assert [s["snas_beats"] for s in results["snas_vs_random"]] == [1, 1]
    table = consistency.markdown(results).splitlines()
    assert table[0] == consistency.TABLE_HEADER
    assert table[2].startswith("| SNAS (edge_all) | 90.0 ± 0.0 | 85.0 ± 5.0")
    assert table[4].startswith("| random, ±10% SNAS params (n=4) | - | - |")
    assert table[6].endswith("2 of 4.")
    # Every seed's row: 2 seeds x (SNAS, DARTS, 2 random cells).
    assert table[8].startswith("| seed | cell |")
    assert [row.split(" | ")[:2] for row in table[10:]] == [
        ["| 0", c] for c in ("snas", "darts", "random0", "random1")
    ] + [["| 1", c] for c in ("snas", "darts", "random0", "random1")]
    assert table[11].endswith(
        "| 50.0 | 50.0 | 50.0 | 1.00 / 0.50 | 9 / 8 | 1,000 | `darts\\|0` |"
    )


def test_a_bad_override_exits_2_with_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        consistency.main(
            ["--out", str(tmp_path), "--override=search.derivation_rule=top3"]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "search.derivation_rule" in err[0], err
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("consistency")
    args = consistency.parse_args([*TINY, f"--out={out}"])
    return args, consistency.run(args)


@pytest.mark.slow
def test_quick_run_writes_the_table_of_both_modes_and_a_matched_cell(
    quick_run,
):
    args, results = quick_run
    out = pathlib.Path(args.out)
    assert results["units_run"] == len(consistency.plan([0], 1)) == 6
    assert json.loads((out / "results.json").read_text()) == results
    table = (out / "table.md").read_text().splitlines()
    assert table[0] == consistency.TABLE_HEADER
    assert [row.split(" | ")[0] for row in table[2:5]] == [
        "| SNAS (edge_all)",
        "| DARTS, 1st order (top2)",
        "| random, ±10% SNAS params (n=1)",
    ]
    rows = results["rows"]
    for mode in consistency.MODES:
        for key in ("supernet_accuracy", "child_accuracy", "entropy_normal"):
            assert rows[mode][key]["n"] == 1, (mode, key)
    # DARTS derives with top2: two edges per node.
    darts = get_genotype(rows["darts"]["genotypes"][0])
    assert [len(node) for node in darts.normal] == [2, 2]
    # The random cell: within ±10% of the retrained SNAS child's count,
    # and not the SNAS child.
    state = json.loads((out / "state.json").read_text())["units"]
    target = state["sample-s0"]["target_parameters"]
    assert target == state["retrain-snas-s0"]["parameters"]
    random = state["retrain-random0-s0"]
    assert abs(random["parameters"] - target) <= 0.1 * target
    assert random["genotype"] != state["retrain-snas-s0"]["genotype"]


@pytest.mark.slow
def test_a_rerun_does_no_work_and_an_unfinished_unit_runs_again(quick_run):
    args, results = quick_run
    out = pathlib.Path(args.out)
    again = consistency.run(args)
    assert again["units_run"] == 0
    assert again["rows"] == results["rows"]
    # As if killed during the last retraining: only that unit runs, and
    # its finished checkpoint resumes to the same accuracy.
    state = json.loads((out / "state.json").read_text())
    del state["units"]["retrain-random0-s0"]
    (out / "state.json").write_text(json.dumps(state))
    resumed = consistency.run(args)
    assert resumed["units_run"] == 1
    assert resumed["rows"] == results["rows"]


@pytest.mark.slow
def test_a_state_of_other_settings_is_refused(quick_run):
    args, _ = quick_run
    other = consistency.parse_args([*TINY, f"--out={args.out}", "--random=2"])
    with pytest.raises(ValueError, match="other settings"):
        consistency.run(other)


def test_progress_counts_each_unit_left_at_its_kind_s_pace():
    units = consistency.plan([0, 1], 1)
    done = {"search-snas-s0": {"seconds": 600}}
    done["search-darts-s0"] = {"seconds": 300}
    done["retrain-snas-s0"] = {"seconds": 60}
    line = consistency._progress_line(units, 3, done, 0)
    assert " 3/12 retrain-snas-s0 60 s;" in line
    # Left: the seed-1 searches at their modes' pace (900 s), 5
    # retrainings at 60 s, 2 samplings at the mean of all (320 s).
    assert line.endswith(f"~{(900 + 300 + 640) / 60:.0f} min left")
