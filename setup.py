"""Packaging for snas-tf.

The repository keeps `trainers/` and `export/` at the top level (the fixed
project layout), but installs them as `snas_tf.trainers` and
`snas_tf.export`: top-level modules with such generic names would collide
with other packages in site-packages.
"""

from setuptools import find_packages, setup

_LIBRARY = find_packages(include=["snas_tf", "snas_tf.*"])
_MAPPED = {"snas_tf.trainers": "trainers", "snas_tf.export": "export"}

setup(
    name="snas-tf",
    version="0.1.0",
    description=(
        "SNAS: Stochastic Neural Architecture Search in TensorFlow / Keras 3."
    ),
    python_requires=">=3.11,<3.12",
    packages=_LIBRARY + list(_MAPPED),
    package_dir=_MAPPED,
    package_data={"snas_tf": ["py.typed"]},
    install_requires=[
        "tensorflow==2.21.*",
        "keras==3.15.*",
        "tf_keras==2.21.*",
        "tensorflow-datasets==4.9.10",
        # tfds imports it on the download path (docs/tensorflow-notes.md §10).
        "importlib_resources>=6",
        "keras-tuner==1.4.8",
        # keras-tuner imports tensorboard on the TF backend
        # (docs/tensorflow-notes.md §9).
        "tensorboard==2.21.*",
        "tensorflow-model-optimization==0.8.1",
        "onnx==1.23.*",
        "tf2onnx==1.17.0",
        "onnxruntime>=1.31,<1.33",
        # gRPC PredictRequest protos for the TF Serving client.
        "tensorflow-serving-api==2.21.*",
        "scikit-learn>=1.5,<2",
        "matplotlib>=3.9,<4",
        "pyyaml>=6,<7",
    ],
    extras_require={
        "test": ["pytest>=8,<10", "pytest-xdist>=3,<4", "ruff==0.17.*"],
        # `snas import-torch` of torch.save files.
        # Install the CPU build: pip install 'snas-tf[torch]'
        # --extra-index-url https://download.pytorch.org/whl/cpu (a plain
        # `torch` on Linux x86-64 is the multi-GB CUDA build).
        "torch": ["torch==2.13.*"],
    },
    entry_points={"console_scripts": ["snas=snas_tf.trainers.cli:main"]},
)
