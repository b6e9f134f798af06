"""snas-tf: SNAS (Stochastic Neural Architecture Search) in TensorFlow/Keras 3.

Reference:
    Xie, Zheng, Liu, Lin, "SNAS: Stochastic Neural Architecture Search",
    ICLR 2019, arXiv:1812.09926.
"""

import os

# oneDNN kernels are off by default in TensorFlow on some x86 CPUs; on, the
# search's depthwise convolutions are several times faster
# (benchmarks/README.md). Only effective when set before TensorFlow is
# imported; an explicit user setting wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

# On CPUs without AVX-512 TensorFlow's oneDNN convolution filter gradients
# build a new oneDNN primitive on every call unless this is off; off, they
# are cached (a faster step, the same memory: benchmarks/README.md). Read
# when the first convolution runs.
os.environ.setdefault("TF_MKL_OPTIMIZE_PRIMITIVE_MEMUSE", "0")

__version__ = "0.1.0"
