"""Width and height of an encoded image, read from its header, not decoded.

A decoder allocates what the header declares: a 400 KB PNG of zeros can
declare 20000x20000 pixels and cost gigabytes to decode. The data pipeline
(`snas_tf.data.sources`, image folders) reads each file's header with this
module and refuses or skips an image over `data.max_image_pixels`; the
exported SavedModel does the same in its graph (`export/savedmodel.py`).

Formats are recognised by their first bytes, as `tf.io.decode_image`
does: JPEG (the first start-of-frame marker), PNG (IHDR), GIF (logical
screen) and BMP (info header; TensorFlow reads both sizes as signed).
Imports no TensorFlow.
"""

import io
import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
GIF_SIGNATURE = b"GIF8"
BMP_SIGNATURE = b"BM"
# JPEG start-of-frame markers: C0-CF but DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0-7 (SOI is read before).
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])


def _jpeg(f):
    """(width, height) of the first start-of-frame, or None."""
    f.seek(2)
    while True:
        byte = f.read(1)
        if not byte:
            return None
        if byte != b"\xff":
            continue  # stray bytes between segments, as libjpeg skips
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker:
            return None
        code = marker[0]
        if code in _STANDALONE:
            continue
        if code in (0xD9, 0xDA):  # end of image, start of scan: no frame
            return None
        length = f.read(2)
        if len(length) < 2:
            return None
        if code in _SOF:
            frame = f.read(5)
            if len(frame) < 5:
                return None
            height, width = struct.unpack(">HH", frame[1:5])
            return width, height
        f.seek(struct.unpack(">H", length)[0] - 2, io.SEEK_CUR)


def read_dimensions(f):
    """(format, width, height) of the encoded image in the binary file
    object `f` (seekable), or None when the header is not one of the four
    formats or is cut short (the decoder then reports the error)."""
    head = f.read(26)
    if head.startswith(JPEG_SIGNATURE):
        size = _jpeg(f)
        return None if size is None else ("JPEG", *size)
    if head.startswith(PNG_SIGNATURE) and len(head) >= 24:
        return ("PNG", *struct.unpack(">II", head[16:24]))
    if head.startswith(GIF_SIGNATURE) and len(head) >= 10:
        return ("GIF", *struct.unpack("<HH", head[6:10]))
    if head.startswith(BMP_SIGNATURE) and len(head) >= 26:
        width, height = struct.unpack("<ii", head[18:26])
        return ("BMP", abs(width), abs(height))
    return None


def dimensions(data: bytes):
    """`read_dimensions` of encoded bytes."""
    return read_dimensions(io.BytesIO(data))


def file_dimensions(path):
    """`read_dimensions` of a file (reads its header segments only)."""
    with open(path, "rb") as f:
        return read_dimensions(f)
