"""The per-request limits of `serving_bytes`, set by `snas export
--max-pixels/--max-image-bytes/--max-images`: written into report.json,
and each enforced by the loaded SavedModel at its boundary."""

import argparse
import json

import pytest
import tensorflow as tf
from image_bombs import small_jpeg

from snas_tf.export import savedmodel
from snas_tf.export.limits import ServingLimits
from snas_tf.trainers import cli
from snas_tf.trainers.cli_args import pixels

# A fresh (untrained) 2-cell, 4-channel network on 8x8 digits.
FRESH = [
    "--override=child.channels=4",
    "--override=child.num_layers=2",
    "--override=data.dataset=digits",
    "--override=data.image_size=8",
    "--override=data.max_examples=400",
]
# 12x10 images pass, 12x11 do not; 3 images a request.
LIMITS = ServingLimits(max_pixels=120, max_image_bytes=2000, max_images=3)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(report, serving_bytes of the loaded SavedModel)."""
    out = tmp_path_factory.mktemp("export") / "out"
    code = cli.main(
        [
            "export",
            "--genotype=SNAS_mild",
            *FRESH,
            "--runs=1",
            "--formats",
            "saved_model",
            "--max-pixels=12x10",
            f"--max-image-bytes={LIMITS.max_image_bytes}",
            f"--max-images={LIMITS.max_images}",
            f"--out={out}",
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    loaded = tf.saved_model.load(str(out / "saved_model"))
    return report, loaded, loaded.signatures[savedmodel.SERVING_BYTES]


def _run(fn, images):
    return fn(image_bytes=tf.constant(images))["logits"].numpy()


def test_limits_round_trip_through_the_report(exported):
    report, *_ = exported
    assert report["serving_limits"] == LIMITS.as_dict()
    assert ServingLimits(**report["serving_limits"]) == LIMITS


def test_images_per_request_at_the_limit_pass_and_over_it_fail(exported):
    *_, fn = exported
    image = small_jpeg(12, 10)
    assert _run(fn, [image] * 3).shape[0] == 3
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"4 images in one request, over the limit of 3 "
        r"\(set by snas export --max-images\)",
    ):
        _run(fn, [image] * 4)


def test_pixels_at_the_limit_pass_and_over_it_fail(exported):
    *_, fn = exported
    assert _run(fn, [small_jpeg(12, 10)]).shape[0] == 1
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"image_bytes\[2\] declares 12x11 pixels \(width x height\), "
        r"over the limit of 120 pixels",
    ):
        _run(fn, [small_jpeg(12, 10), small_jpeg(10, 12), small_jpeg(12, 11)])


def test_image_bytes_at_the_limit_pass_and_over_it_fail(exported):
    *_, fn = exported
    image = small_jpeg(12, 10)
    # Bytes after the end-of-image marker are ignored by the decoder.
    exact = image + b"\0" * (LIMITS.max_image_bytes - len(image))
    assert _run(fn, [exact]).shape[0] == 1
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"image_bytes\[1\] holds 2001 bytes, over the limit of 2000 "
        r"bytes per image",
    ):
        _run(fn, [exact, exact + b"\0"])


@pytest.mark.parametrize(
    "text, value",
    [("4096x4096", 4096 * 4096), ("16M", 16_000_000), ("120", 120)],
)
def test_max_pixels_parses_a_size_or_a_count(text, value):
    assert pixels(text) == value


@pytest.mark.parametrize("text", ["0x5", "axb", "4096x", "-3"])
def test_max_pixels_refuses_a_bad_value(text):
    with pytest.raises(argparse.ArgumentTypeError, match=repr(text)):
        pixels(text)


def test_a_limit_out_of_range_is_refused():
    with pytest.raises(ValueError, match="max_images must be an int in"):
        ServingLimits(max_images=0)
