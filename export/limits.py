"""What one request to the exported SavedModel's `serving_bytes` may hold.

The signature checks these in its graph before it decodes anything
(`export/savedmodel.py`): a small compressed file can declare a size that
takes gigabytes to decode, and nothing else bounds a request. They are
set at export (`snas export --max-pixels`, `--max-image-bytes`,
`--max-images`) and written into `report.json`. Imports no TensorFlow, so
the command line can parse them before TensorFlow loads.
"""

import dataclasses

from snas_tf.config import DataConfig


@dataclasses.dataclass(frozen=True)
class ServingLimits:
    """Per-request limits of the `serving_bytes` signature.

    Attributes:
        max_pixels: width x height that an image's header may declare
            (by default the data pipeline's `data.max_image_pixels`).
        max_image_bytes: bytes of one encoded image.
        max_images: images in one request.
    """

    max_pixels: int = DataConfig.max_image_pixels
    max_image_bytes: int = 16 * 2**20
    max_images: int = 64

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            # Pixels are int64 in the graph, lengths and counts int32.
            high = 2**62 if field.name == "max_pixels" else 2**31 - 1
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 1 <= value <= high
            ):
                raise ValueError(
                    f"Serving limit {field.name} must be an int in [1, "
                    f"{high}], got {value!r}."
                )

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)
