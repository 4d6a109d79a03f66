"""Data sets cut from the sample images that scikit-image bundles (read as files, never imported):
``textures`` (CC0 photographs of brick, grass and gravel, cut into patches) and ``faces``
(``lfw_subset``: 100 faces and 100 non-faces)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from ..data import Dataset, labelled, split_off_test
from ..errors import DataError

TEXTURES = ("brick", "grass", "gravel")
PATCH = 32
TEXTURE_TRAIN_PATCHES = 1000  # per class, from the top three quarters of each photograph
TEXTURE_TEST_PATCHES = 334  # per class, from the bottom quarter: no pixel is in both splits


def skimage_data_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("scikit-image's sample images are missing: pip install --no-deps scikit-image==0.26.0 "
                        "(make install does it; only its data files are read).")  # fmt: skip
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _patches(image: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    rows = rng.integers(0, image.shape[0] - PATCH + 1, count)
    cols = rng.integers(0, image.shape[1] - PATCH + 1, count)
    return np.stack([image[r : r + PATCH, c : c + PATCH] for r, c in zip(rows, cols)])


def load_textures() -> Dataset:
    """Random 32x32 patches of three texture photographs (512x512 grayscale): 1,000 training
    patches per class from the top three quarters, 334 test patches from the bottom quarter."""
    rng = np.random.default_rng(0)
    train, test = [], []
    for name in TEXTURES:
        image = np.asarray(Image.open(skimage_data_dir() / f"{name}.png").convert("L"))
        cut = image.shape[0] * 3 // 4
        train.append(_patches(image[:cut], TEXTURE_TRAIN_PATCHES, rng))
        test.append(_patches(image[cut:], TEXTURE_TEST_PATCHES, rng))
    labels = lambda per_class: np.repeat(np.arange(len(TEXTURES)), per_class)  # noqa: E731
    return Dataset(
        "textures",
        labelled(np.concatenate(train), labels(TEXTURE_TRAIN_PATCHES), TEXTURES, "textures/train"),
        labelled(np.concatenate(test), labels(TEXTURE_TEST_PATCHES), TEXTURES, "textures/test"),
    )


def load_faces() -> Dataset:
    """``lfw_subset``: 25x25 grayscale, 100 faces then 100 non-faces, with a fixed 30% test split."""
    values = np.load(skimage_data_dir() / "lfw_subset.npy", allow_pickle=False)
    pixels = np.round(np.clip(values, 0, 1) * 255).astype(np.uint8)
    labels = np.repeat([0, 1], len(pixels) // 2)
    return split_off_test(labelled(pixels, labels, ("face", "not-face"), "faces"), 0.3, "faces")
