"""Images without labels: a folder of them (``--unlabeled DIR``, or ``DATA/unlabeled/`` found by
itself), checked, and kept apart from every labelled split.

An unlabelled image that is byte for byte one of the labelled images - above all one of the test
split's - is left out and counted: a test split must never teach the model. For the study and the
benchmarks, :func:`hidden_labels` simulates unlabelled images with a set's own training pool.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from .data import UNLABELED_NAMES, FileSource, ImageSet, Splits, image_files, is_image_file, per_class_subset
from .errors import DataError

log = logging.getLogger(__name__)

NO_LABEL = -1
MOST_IMAGES = 10_000  # unlabelled images a run learns from at most: the graph's cost grows with their square


def found_folder(data: str) -> Path | None:
    """``DATA/unlabeled/`` (or ``unlabelled/``) when ``data`` is a folder that has one."""
    root = Path(data)
    if not root.is_dir():
        return None
    return next((p for p in sorted(root.iterdir()) if p.is_dir() and p.name.lower() in UNLABELED_NAMES), None)


def load_unlabeled(folder: str | Path) -> ImageSet:
    """The image files in ``folder`` and its sub-folders (for the images of a camera's days, say).
    A folder of class folders, each holding images, is refused: those images have labels."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise DataError(f"--unlabeled {folder} {what}; expected a folder of images without labels.")
    loose = [p for p in folder.iterdir() if p.is_file() and is_image_file(p)]
    subfolders = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not loose and len(subfolders) >= 2 and all(any(is_image_file(f) for f in p.iterdir()) for p in subfolders):
        raise DataError(f"--unlabeled {folder} holds class folders ({', '.join(sorted(p.name + '/' for p in subfolders))}), "
                        "like labelled data: put labelled images in the data folder, and images without labels loose "
                        "in this one.")  # fmt: skip
    paths = image_files(folder)
    if not paths:
        raise DataError(f"--unlabeled {folder} holds no images (looked for the usual image types).")
    return ImageSet(FileSource(paths), np.arange(len(paths)), np.full(len(paths), NO_LABEL, dtype=np.int64), ())


def _file_digests(images: ImageSet) -> list[str | None]:
    """The SHA-1 of each image file's bytes (``None`` for an image held in memory or unreadable)."""
    if not isinstance(images.source, FileSource):
        return [None] * len(images)
    digests = []
    for i in images.indices:
        try:
            digests.append(hashlib.sha1(Path(images.source.paths[i]).read_bytes()).hexdigest())
        except OSError:
            digests.append(None)
    return digests


def apart_from(unlabeled: ImageSet, splits: Splits) -> ImageSet:
    """``unlabeled`` without the images that are also in a labelled split (same bytes), each
    left-out kind counted in the log."""
    keep = np.ones(len(unlabeled), dtype=bool)
    digests = _file_digests(unlabeled)
    for name in ("test", "val", "train"):
        split = getattr(splits, name)
        if split is None:
            continue
        labelled = set(_file_digests(split)) - {None}
        same = np.array([d is not None and d in labelled for d in digests], dtype=bool) & keep
        if same.any():
            log.warning("--unlabeled: left out %d image(s) that are also in the %s split", int(same.sum()), name)
            keep &= ~same
    if not keep.any():
        raise DataError("--unlabeled: every image in it is also a labelled one; nothing is left to learn from.")
    return unlabeled.subset(np.flatnonzero(keep))


def at_most(unlabeled: ImageSet, limit: int = MOST_IMAGES, seed: int = 0) -> ImageSet:
    """``unlabeled``, or a seeded sample of ``limit`` of its images when it holds more (logged)."""
    if len(unlabeled) <= limit:
        return unlabeled
    log.warning("--unlabeled: %d images; learning from a seeded sample of %d (the neighbour graph's cost grows with "
                "the square of their number)", len(unlabeled), limit)  # fmt: skip
    return unlabeled.subset(np.sort(np.random.default_rng(seed).permutation(len(unlabeled))[:limit]))


def hidden_labels(pool: ImageSet, splits: Splits, per_class: int, seed: int = 0) -> ImageSet:
    """Up to ``per_class`` images of each class of the training ``pool`` that are in neither the
    training nor the validation split, their labels hidden: how the study and the benchmarks
    simulate unlabelled images. The test split is never drawn from (it is not in the pool)."""
    used = np.concatenate([splits.train.indices, splits.val.indices])
    rest = pool.subset(np.flatnonzero(~np.isin(pool.indices, used)))
    if splits.test is not None and rest.source is splits.test.source and np.isin(rest.indices, splits.test.indices).any():
        raise DataError("the training pool shares images with the test split: no unlabelled image may come from it.")
    chosen = per_class_subset(rest, per_class, seed)
    return ImageSet(chosen.source, chosen.indices, np.full(len(chosen), NO_LABEL, dtype=np.int64), (), chosen.fit)
