"""Small encoded images whose headers declare a huge size (tests and the
serving load test): a decoder would allocate width x height pixels."""

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _chunk(kind, data):
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_declaring(width, height, rows=2):
    """A grey 8-bit PNG with a valid IHDR of `width` x `height` and pixel
    data for only `rows` rows (zeros; a few hundred bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * ((width + 1) * rows), 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def small_jpeg(width=12, height=10, seed=0):
    pixels = np.random.default_rng(seed).integers(
        0, 256, (height, width, 3), dtype=np.uint8
    )
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


def jpeg_declaring(width, height, jpeg=None):
    """A small real JPEG whose start-of-frame is patched to declare
    `width` x `height` (its scan data stays that of the small image)."""
    data = bytearray(jpeg or small_jpeg())
    i = 2
    while True:
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            data[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
