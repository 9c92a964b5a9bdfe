"""Where the built-in datasets live on this machine. Nothing is downloaded at run time."""

from __future__ import annotations

from pathlib import Path

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
SKLEARN_SETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")


def fashion_mnist_missing(root: Path = FASHION_MNIST_DIR) -> list[str]:
    """The Fashion-MNIST idx files that are not under ``root`` (empty when all are there)."""
    return [name for name in FASHION_MNIST_FILES if not (root / name).is_file()]
