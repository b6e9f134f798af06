"""snas_tf.image_headers reads the size an image's header declares."""

import io

import numpy as np
import pytest
from image_bombs import jpeg_declaring, png_declaring
from PIL import Image

from snas_tf import image_headers


def _encoded(fmt, width, height):
    pixels = np.zeros((height, width, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP"])
def test_reads_width_and_height_of_each_format(fmt):
    assert image_headers.dimensions(_encoded(fmt, 13, 7)) == (fmt, 13, 7)


def test_reads_the_declared_size_not_the_data():
    assert image_headers.dimensions(png_declaring(20000, 30000)) == (
        "PNG",
        20000,
        30000,
    )
    assert image_headers.dimensions(jpeg_declaring(40000, 20000)) == (
        "JPEG",
        40000,
        20000,
    )


def test_reads_a_jpeg_frame_after_large_segments(tmp_path):
    """The start of frame comes after an EXIF-sized APP1 segment."""
    jpeg = _encoded("JPEG", 9, 5)
    app1 = b"\xff\xe1" + (2 + 60000).to_bytes(2, "big") + b"\xff" * 60000
    path = tmp_path / "big_exif.jpg"
    path.write_bytes(jpeg[:2] + app1 + jpeg[2:])
    assert image_headers.file_dimensions(path) == ("JPEG", 9, 5)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"definitely not an image",
        png_declaring(5, 5)[:20],  # cut inside IHDR
        _encoded("JPEG", 4, 4)[:12],  # cut before the start of frame
        b"\xff\xd8\xff\xd9",  # JPEG that ends without a frame
    ],
)
def test_unknown_or_short_headers_give_none(data):
    assert image_headers.dimensions(data) is None
