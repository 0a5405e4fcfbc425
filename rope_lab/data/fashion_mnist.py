"""Fashion-MNIST (Xiao et al. 2017; MIT, Zalando): 60k/10k 28x28 grayscale images in 10 classes.

Sources, in order (docs/architecture.md, "Data"): a directory the user gave holding the four idx ``.gz``
files; torchvision's download (the canonical public source); Debian's ``dataset-fashion-mnist`` package
(works on machines that reach only the package registries). Files are verified by sha256 wherever they
come from; a cached file that fails its checksum is fetched again, never used.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np

from rope_lab.data.fetch import Source, debian_package, resolve, user_path_source, verified

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
DEBIAN_DIR = "usr/share/datasets/fashion-mnist"


def read_idx(path: Path) -> np.ndarray:
    """Parse an idx(.gz) file (big-endian header: magic, dims) into a uint8 array."""
    raw = gzip.open(path).read()
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", ndim, 4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _all_verified(root: Path) -> bool:
    return all(verified(root / name, digest) for name, digest in FILES.items())


def _collect(src_root: Path, cache: Path) -> Path:
    """Copy verified files into the cache folder ``fashion_mnist`` and return it."""
    if not _all_verified(src_root):
        raise RuntimeError(f"{src_root} lacks the four Fashion-MNIST idx .gz files or they fail their checksums")
    dest = cache / "fashion_mnist"
    dest.mkdir(parents=True, exist_ok=True)
    if src_root.resolve() != dest.resolve():
        for name in FILES:  # copy then rename: concurrent readers never see a half-written file
            tmp = dest / f".{name}.{os.getpid()}.tmp"
            shutil.copyfile(src_root / name, tmp)
            os.replace(tmp, dest / name)
    return dest


def fashion_mnist_root(data_dir: str | Path | None = None, user_path: str | None = None,
                       option: str = "task.data_path") -> tuple[Path, str]:
    """Directory with the four verified idx files, and the name of the source used. ``user_path`` (the user's
    ``option``) must hold the four files: a missing folder or bad files are an error, never a fallback."""

    def cached(cache: Path) -> Path:
        return _collect(cache / "fashion_mnist", cache)

    def user(cache: Path) -> Path:
        return _collect(Path(user_path), cache)

    def torchvision_download(cache: Path) -> Path:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(cache / "torchvision"), download=True)
        return _collect(cache / "torchvision" / "FashionMNIST" / "raw", cache)

    def debian(cache: Path) -> Path:
        root = debian_package("dataset-fashion-mnist", cache, {f"{DEBIAN_DIR}/{n}": h for n, h in FILES.items()})
        return _collect(root / DEBIAN_DIR, cache)

    if user_path:  # the user's files or an error naming the folder; never a silent fallback to other copies
        return resolve("fashion_mnist", [user_path_source(option, user_path, user)], data_dir)
    sources = [Source("cache", cached), Source("torchvision download", torchvision_download),
               Source("debian:dataset-fashion-mnist", debian)]
    hint = (f"instead: {option}=<folder holding the four Fashion-MNIST files {', '.join(FILES)}> (from the "
            f"dataset's GitHub release or any machine where the download works)")
    return resolve("fashion_mnist", sources, data_dir, hint=hint)


def load_fashion_mnist(split: str, data_dir: str | Path | None = None, user_path: str | None = None,
                       option: str = "task.data_path") -> tuple[np.ndarray, np.ndarray, str]:
    """(images (N, 28, 28) uint8, labels (N,) int64, source) for split 'train' or 'test'."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"unknown Fashion-MNIST split '{split}'; choose 'train' or 'test'")
    root, source = fashion_mnist_root(data_dir, user_path, option)
    images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels, source
