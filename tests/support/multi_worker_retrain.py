"""One worker of the two-worker test: a tiny retrain on the bundled digits.

Usage: `python multi_worker_retrain.py MODEL_DIR [OVERRIDE ...]`. The
cluster comes from `TF_CONFIG`; extra `key=value` overrides come last and
win (e.g. `runtime.strategy=default` for a single-process reference run).
Run by `tests/trainers/multi_worker_test.py`, never imported by it.
"""

import os
import sys

# Before TensorFlow starts; importing snas_tf (below) sets its own defaults.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from snas_tf.config import RetrainConfig, load_config  # noqa: E402
from snas_tf.trainers.retrain import run_retrain  # noqa: E402

# One node per cell and two (reduction) cells: few variables, so few
# collectives and a fast trace.
GENOTYPE = (
    "normal=skip_connect:0,sep_conv_3x3:1;reduce=max_pool_3x3:0,skip_connect:1"
)

TINY = (
    f"child.genotype={GENOTYPE}",
    "child.channels=4",
    "child.num_layers=2",
    "child.auxiliary=false",
    "train.epochs=1",
    "train.batch_size=8",
    "train.drop_path_prob=0",
    "data.dataset=digits",
    "data.image_size=8",
    "data.max_examples=64",
    "data.augment=none",
    "data.cutout=0",
    "runtime.strategy=multi_worker_mirrored",
    "runtime.verbose=0",
    "runtime.seed=0",
)


def main(argv) -> int:
    if len(argv) < 1:
        print(__doc__, file=sys.stderr)
        return 2
    model_dir, overrides = argv[0], argv[1:]
    config = load_config([], [*TINY, *overrides], RetrainConfig)
    run_retrain(config, None, model_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
