"""`snas summary` pins the paper's figures for the published genotypes."""

import json

import pytest

from snas_tf.trainers import cli


def _summary(capsys, *args):
    assert cli.main(["summary", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    "genotype, millions", [("SNAS_moderate", 2.8), ("SNAS_aggressive", 2.3)]
)
def test_cifar_defaults_match_the_paper(capsys, genotype, millions):
    out = _summary(capsys, "--genotype", genotype)
    assert (out["layers"], out["channels"], out["image_size"]) == (20, 36, 32)
    assert out["params"] / 1e6 == pytest.approx(millions, abs=0.1)
    assert out["params_with_auxiliary"] > out["params"]


def test_imagenet_mobile_moderate_is_under_600m_madds(capsys):
    out = _summary(
        capsys, "--genotype", "SNAS_moderate", "--network", "imagenet"
    )
    assert out["params"] / 1e6 == pytest.approx(4.3, abs=0.15)
    assert out["multiply_adds"] < 600e6


def test_unknown_genotype_is_a_one_line_error(capsys):
    assert cli.main(["summary", "--genotype", "SNAS_bold"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "SNAS_bold" in err
