"""Data sets that ship as arrays of small images: Fashion-MNIST (Debian's IDX files, or a download),
scikit-learn's digits, animal-mnist (a PyPI package's numpy arrays)."""

from __future__ import annotations

import gzip
import importlib.util
import logging
import os
import pickle
import urllib.request
from pathlib import Path

import numpy as np

from ..data import Dataset, labelled, split_off_test
from ..errors import DataError

log = logging.getLogger(__name__)

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
FASHION_MNIST_DIRS = [Path("/usr/share/datasets/fashion-mnist"), Path.home() / ".cache/transferlab/fashion-mnist"]
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): big-endian header, then uint8 data."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read {path}: {error}") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes.")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {data.size}.")
    return data.reshape(shape)


def _download_fashion_mnist(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in (n for pair in _FASHION_MNIST_FILES.values() for n in pair):
        if (target / name).exists():
            continue
        log.info("downloading %s%s", FASHION_MNIST_URL, name)
        partial = target / f"{name}.part"
        urllib.request.urlretrieve(FASHION_MNIST_URL + name, partial)
        os.replace(partial, target / name)


def find_fashion_mnist(data_dir: str | Path | None = None, download: bool = True) -> Path:
    """The directory holding Fashion-MNIST's four ``*-ubyte.gz`` files.

    Looks in ``data_dir`` if given, else Debian's ``dataset-fashion-mnist`` location, else the
    user cache; downloads the originals into the cache when none is found and ``download``.
    """
    names = [n for pair in _FASHION_MNIST_FILES.values() for n in pair]
    candidates = [Path(data_dir)] if data_dir else FASHION_MNIST_DIRS
    for directory in candidates:
        if all((directory / n).exists() for n in names):
            return directory
    if data_dir:
        missing = [n for n in names if not (Path(data_dir) / n).exists()]
        raise DataError(f"--data-dir {str(data_dir)!r} lacks Fashion-MNIST files: {', '.join(missing)}.")
    if download:
        try:
            _download_fashion_mnist(FASHION_MNIST_DIRS[-1])
            return FASHION_MNIST_DIRS[-1]
        except OSError as error:
            log.warning("Fashion-MNIST download failed: %s", error)
    raise DataError(
        "Fashion-MNIST not found. Install Debian's package (apt-get install dataset-fashion-mnist), "
        "or pass --data-dir DIR holding the four *-ubyte.gz files."
    )


def load_fashion_mnist(data_dir: str | Path | None = None) -> Dataset:
    directory = find_fashion_mnist(data_dir)
    sets = {}
    for split, (images_file, labels_file) in _FASHION_MNIST_FILES.items():
        pixels, labels = _read_idx(directory / images_file), _read_idx(directory / labels_file)
        if len(pixels) != len(labels):
            raise DataError(f"{directory}: {len(pixels)} {split} images but {len(labels)} labels.")
        sets[split] = labelled(pixels, labels, FASHION_MNIST_CLASSES, f"fashion-mnist/{split}")
    return Dataset("fashion-mnist", sets["train"], sets["test"])


def load_digits() -> Dataset:
    """scikit-learn's bundled handwritten digits (1,797 images of 8x8, 16 grey levels), with a
    fixed stratified 30% test split: a small dataset far from both ImageNet and Fashion-MNIST."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    pixels = np.round(digits.images * (255 / 16)).astype(np.uint8)
    return split_off_test(labelled(pixels, digits.target, [str(d) for d in range(10)], "digits"), 0.3, "digits")


ANIMAL_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else (the package's files are pickles)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np.ndarray(0).__reduce__()[0],
        ("numpy._core.multiarray", "_reconstruct"): np.ndarray(0).__reduce__()[0],
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise DataError(f"animal-mnist: refusing to unpickle {module}.{name} (only numpy arrays are expected).")
        return self._ALLOWED[(module, name)]


def _animal_mnist_dir() -> Path:
    spec = importlib.util.find_spec("animal_mnist")  # located, never imported: its loader imports tensorflow
    if spec is None or not spec.submodule_search_locations:
        raise DataError("animal-mnist is not installed: pip install --no-deps animal-mnist==0.4 (make install does it).")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"


def load_animal_mnist() -> Dataset:
    """animal-mnist (PyPI, MIT): 10 animal classes x 1,000 white silhouettes from photos, 28x28,
    with a fixed stratified 20% test split."""
    arrays = []
    for name in ("animal_data_version_3.gz", "animal_label_version_3.gz"):
        with gzip.open(_animal_mnist_dir() / name, "rb") as handle:
            arrays.append(_ArraysOnly(handle).load())
    pixels, labels = np.asarray(arrays[0], dtype=np.uint8), np.asarray(arrays[1], dtype=np.int64)
    if pixels.shape != (len(labels), 28, 28):
        raise DataError(f"animal-mnist: unexpected arrays {pixels.shape} and {labels.shape}.")
    return split_off_test(labelled(pixels, labels, ANIMAL_CLASSES, "animal-mnist"), 0.2, "animal-mnist")
