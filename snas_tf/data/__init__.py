"""tf.data input pipelines for the search and the retraining.

- `sources`: the data sets (digits, TFDS, image folders) and the
  validation share carved from a training split;
- `preprocessing`: normalisation, augmentation and the evaluation
  preprocessing (also the export's);
- `pipelines`: the batched pipelines, `search_data` and `retrain_data`.

Every pipeline yields `(images, labels)` batches of float32 RGB images,
normalised per data set, and int32 labels. The public names of the three
modules are importable from here.
"""

from snas_tf.data.pipelines import (
    CACHE_BYTES,
    SHUFFLE_BUFFER,
    Pipelines,
    make_pipelines,
    retrain_data,
    search_data,
)
from snas_tf.data.preprocessing import (
    AUGMENTATIONS,
    CENTRE_CROP_FRACTION,
    NORMALISATION,
    augmentation_style,
    normalisation,
    preprocess_eval,
)
from snas_tf.data.sources import (
    DIGITS_CLASSES,
    SOURCES,
    default_eval_split,
    is_available,
    num_classes,
)

__all__ = [
    "AUGMENTATIONS",
    "CACHE_BYTES",
    "CENTRE_CROP_FRACTION",
    "DIGITS_CLASSES",
    "NORMALISATION",
    "SHUFFLE_BUFFER",
    "SOURCES",
    "Pipelines",
    "augmentation_style",
    "default_eval_split",
    "is_available",
    "make_pipelines",
    "normalisation",
    "num_classes",
    "preprocess_eval",
    "retrain_data",
    "search_data",
]
