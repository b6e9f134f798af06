"""snas-tf: SNAS (Stochastic Neural Architecture Search) in TensorFlow/Keras 3.

Reference:
    Xie, Zheng, Liu, Lin, "SNAS: Stochastic Neural Architecture Search",
    ICLR 2019, arXiv:1812.09926.
"""

__version__ = "0.1.0"
