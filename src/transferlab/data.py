"""Labelled image sets: where their pixels come from, a user's folder or CSV, class selection,
stratified splits. Named built-in data sets (``fashion-mnist``, ``digits``, ...) are in
:mod:`transferlab.datasets`.

An :class:`ImageSet` is a list of images (held in memory or as files) with integer labels.
Nothing is decoded when a set is listed: images are opened one at a time where they are used,
and a file that cannot be opened is reported by whoever opens it.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DataError
from .images import IMAGE_SUFFIXES, image_size, open_image, to_square

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Image sources: where the pixels of item i come from.


class ArraySource:
    """Images held in one uint8 array (N x H x W or N x H x W x 3)."""

    def __init__(self, pixels: np.ndarray, name: str):
        self.pixels = pixels
        self.name = name

    def open(self, index: int, min_side: int | None = None) -> Image.Image:
        return Image.fromarray(self.pixels[index]).convert("RGB")

    def size(self, index: int) -> tuple[int, int]:
        return self.pixels.shape[2], self.pixels.shape[1]

    def describe(self, index: int) -> str:
        return f"{self.name}[{index}]"

    def origin(self, index: int) -> tuple[ArraySource, int]:
        return self, index

    def fingerprint(self, indices: np.ndarray) -> bytes:
        return hashlib.sha256(np.ascontiguousarray(self.pixels[indices]).tobytes()).digest()


class FileSource:
    """Images stored as files."""

    def __init__(self, paths: list[Path]):
        self.paths = paths

    def open(self, index: int, min_side: int | None = None) -> Image.Image:
        return open_image(self.paths[index], min_side)

    def size(self, index: int) -> tuple[int, int]:
        return image_size(self.paths[index])

    def describe(self, index: int) -> str:
        return str(self.paths[index])

    def origin(self, index: int) -> tuple[FileSource, int]:
        return self, index

    def fingerprint(self, indices: np.ndarray) -> bytes:
        digest = hashlib.sha256()
        for i in indices:
            path = self.paths[i]
            try:
                stat = path.stat()
                digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{path}\0missing\n".encode())
        return digest.digest()


class JoinedSource:
    """The images of several image sets of other sources as one source (a data set's training and
    validation folders, the two styles of a cross-style set): item i is some part's image."""

    def __init__(self, parts: list[ImageSet]):
        self.items = [(part.source, int(index)) for part in parts for index in part.indices]

    def open(self, index: int, min_side: int | None = None) -> Image.Image:
        source, inner = self.items[index]
        return source.open(inner, min_side)

    def size(self, index: int) -> tuple[int, int]:
        source, inner = self.items[index]
        return source.size(inner)

    def describe(self, index: int) -> str:
        source, inner = self.items[index]
        return source.describe(inner)

    def origin(self, index: int) -> tuple[ArraySource | FileSource, int]:
        source, inner = self.items[index]
        return source.origin(inner)

    def fingerprint(self, indices: np.ndarray) -> bytes:
        digest, run = hashlib.sha256(), []
        for source, inner in [self.items[i] for i in indices] + [(None, -1)]:  # runs of one source at a time
            if run and source is not run[0][0]:
                digest.update(run[0][0].fingerprint(np.asarray([i for _, i in run])))
                run = []
            run.append((source, inner))
        return digest.digest()


@dataclass(frozen=True)
class ImageSet:
    """Some images of one source, with labels indexing ``classes``, made square by ``fit``
    (:data:`.images.FITS`) when a network reads them."""

    source: ArraySource | FileSource | JoinedSource
    indices: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    fit: str = "crop"

    def __len__(self) -> int:
        return len(self.indices)

    def open(self, i: int, min_side: int | None = None) -> Image.Image:
        """Image ``i`` in RGB; ``min_side``: the shorter side it will be shrunk to (a JPEG may decode
        at a reduced scale down to it, :func:`.images.open_image`)."""
        return self.source.open(int(self.indices[i]), min_side)

    def square(self, i: int, resolution: int) -> np.ndarray:
        """Image ``i`` as a network reads it: ``resolution`` x ``resolution`` x 3 uint8, made square by the set's fit."""
        return to_square(self.open(i, resolution), resolution, self.fit)

    def size(self, i: int) -> tuple[int, int]:
        """(width, height) of image ``i`` as stored (a file's header only: nothing decoded)."""
        return self.source.size(int(self.indices[i]))

    def with_fit(self, fit: str) -> ImageSet:
        return self if fit == self.fit else dataclasses.replace(self, fit=fit)

    def describe(self, i: int) -> str:
        return self.source.describe(int(self.indices[i]))

    def subset(self, positions: np.ndarray) -> ImageSet:
        return ImageSet(self.source, self.indices[positions], self.labels[positions], self.classes, self.fit)

    def origins(self) -> list[tuple[ArraySource | FileSource, int]]:
        """Each image as (the array or files it is read from, its index there): the same image
        whichever subsets and unions of a data set's splits it came through."""
        return [self.source.origin(int(index)) for index in self.indices]

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.source.fingerprint(self.indices))
        digest.update(self.labels.astype(np.int64).tobytes())
        if self.fit != "crop":  # the entries of cropped images keep the keys they had before fits were chosen
            digest.update(self.fit.encode())
        return digest.hexdigest()[:24]

    def counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.classes))

    def union(self, other: ImageSet) -> ImageSet:
        """This set's images and ``other``'s, of the same classes (e.g. train and validation)."""
        if other.classes != self.classes:
            raise DataError("Only image sets of one class list can be joined.")
        if other.fit != self.fit:
            raise DataError(f"Only image sets of one fit can be joined, got {self.fit!r} and {other.fit!r}.")
        labels = np.concatenate([self.labels, other.labels])
        if other.source is self.source:
            return ImageSet(self.source, np.concatenate([self.indices, other.indices]), labels, self.classes, self.fit)
        return ImageSet(JoinedSource([self, other]), np.arange(len(labels)), labels, self.classes, self.fit)


@dataclass(frozen=True)
class Dataset:
    """A labelled dataset: a training pool and, where the data has them, a test split and a
    validation split of its own (else validation is drawn from the training pool)."""

    name: str
    train: ImageSet
    test: ImageSet | None
    val: ImageSet | None = None


def labelled(pixels: np.ndarray, labels: np.ndarray, classes, name: str) -> ImageSet:
    """Every image of a uint8 array, labelled: the building block of the built-in data sets."""
    return ImageSet(ArraySource(pixels, name), np.arange(len(labels)), np.asarray(labels, dtype=np.int64), tuple(classes))


def split_off_test(everything: ImageSet, test_fraction: float, name: str, seed: int = 0) -> Dataset:
    """A fixed, stratified test split for a set that comes without one."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(everything), dtype=bool)
    for label in range(len(everything.classes)):
        members = rng.permutation(np.flatnonzero(everything.labels == label))
        test[members[: round(len(members) * test_fraction)]] = True
    return Dataset(name, everything.subset(np.flatnonzero(~test)), everything.subset(np.flatnonzero(test)))


@dataclass(frozen=True)
class Splits:
    train: ImageSet
    val: ImageSet
    test: ImageSet | None
    unlabeled: ImageSet | None = None  # images without labels the run may learn from (``--unlabeled``)
    val_given: bool = False  # the validation split is the data set's own (a val/ folder), not drawn from training

    def labelled_per_class(self) -> float:
        """The median class's labelled images: the training and validation splits together."""
        counts = np.bincount(np.concatenate([self.train.labels, self.val.labels]))
        return float(np.median(counts[counts > 0]))

    def with_fit(self, fit: str) -> Splits:
        """The same images, every split made square by ``fit`` (:data:`.images.FITS`)."""
        def fitted(images: ImageSet | None) -> ImageSet | None:
            return None if images is None else images.with_fit(fit)

        return dataclasses.replace(self, train=fitted(self.train), val=fitted(self.val), test=fitted(self.test),
                                   unlabeled=fitted(self.unlabeled))  # fmt: skip


# --------------------------------------------------------------------------------------------
# A user's own data: an image folder or a CSV.


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def image_files(folder: Path) -> list[Path]:
    """The image files in ``folder`` and its sub-folders, sorted by path."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))


UNLABELED_NAMES = ("unlabeled", "unlabelled")  # a data folder's sub-folder of images without labels


def _sub_folders(root: Path) -> list[Path]:
    """``root``'s visible sub-folders, but for one of unlabelled images."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and p.name.lower() not in UNLABELED_NAMES)  # fmt: skip


def _folder_set(root: Path, classes: tuple[str, ...] | None = None) -> ImageSet:
    """An ImageSet from ``root/<class>/<image>``; ``classes`` fixes the class order when given."""
    class_dirs = _sub_folders(root)
    if not class_dirs:
        files = [p for p in root.iterdir() if p.is_file()]
        what = "only loose files, no class folders" if files else "nothing"
        raise DataError(f"{root} holds {what}; expected one sub-folder of images per class (root/<class>/<image>).")
    names = tuple(p.name for p in class_dirs)
    if classes is not None and set(names) != set(classes):
        raise DataError(f"{root} has classes {sorted(names)}, expected the training classes {sorted(classes)}.")
    classes = classes or names
    paths, labels = [], []
    for class_dir in class_dirs:
        files = image_files(class_dir)
        if not files:
            raise DataError(f"Class folder {class_dir} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))}).")
        paths += files
        labels += [classes.index(class_dir.name)] * len(files)
    return ImageSet(FileSource(paths), np.arange(len(paths)), np.asarray(labels, dtype=np.int64), classes)


SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}


def _split_folders(root: Path) -> dict[str, Path] | None:
    """``root``'s split folders by split (train, val, test), or ``None`` when it holds none; a
    layout that mixes split folders with class folders, or has no training folder, is refused."""
    folders = _sub_folders(root)
    found: dict[str, Path] = {}
    for folder in folders:
        split = next((s for s, names in SPLIT_NAMES.items() if folder.name.lower() in names), None)
        if split is not None:
            if split in found:
                raise DataError(f"{root} holds two {split} folders ({found[split].name}/ and {folder.name}/); keep one.")
            found[split] = folder
    if not found:
        return None
    others = sorted(p.name for p in folders if p not in found.values())
    if "train" not in found or others:
        named = ", ".join(f"{p.name}/" for p in found.values())
        why = f"beside what look like class folders ({', '.join(others)})" if others else "but no train/ folder"
        raise DataError(f"{root} holds split folders ({named}) {why}. Use root/train/<class>/<image> with "
                        "root/val/<class>/... and/or root/test/<class>/..., or root/<class>/<image> alone.")  # fmt: skip
    return found


def load_image_folder(root: str | Path) -> Dataset:
    """``root/<class>/<image>``, or split folders: ``root/train/<class>/...`` with ``root/test/...``
    (or ``testing``) and/or ``root/val/...`` (or ``valid``, ``validation``), the layout Keras,
    torchvision and most downloaded data sets use. A given validation folder is the validation
    split; without one it is drawn from the training images."""
    root = Path(root)
    folders = _split_folders(root)
    if folders is None:
        return Dataset(root.name, _folder_set(root), None)
    train = _folder_set(folders["train"])
    given = {split: _folder_set(folders[split], train.classes) for split in ("val", "test") if split in folders}
    log.info("%s: training images from %s/%s", root, folders["train"].name,
             "".join(f", {s} images from {folders[s].name}/" for s in given))  # fmt: skip
    return Dataset(root.name, train, given.get("test"), given.get("val"))


def load_csv(path: str | Path) -> Dataset:
    """A CSV with a ``path,label`` header; relative paths are taken from the CSV's folder.

    Every path must stay inside that folder (``..`` that escapes it is refused). Repeated rows
    are dropped with a warning; one path under two labels is an error.
    """
    path = Path(path)
    root = path.parent.resolve()
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{path} is not a readable UTF-8 CSV: {error}") from error
    if not rows:
        raise DataError(f"{path} has no rows; expected a header 'path,label' and one row per image.")
    missing = {"path", "label"} - set(rows[0])
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(sorted(missing))}; its header is {list(rows[0])}.")
    labels_of: dict[Path, str] = {}
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        image, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        if not image or not label:
            raise DataError(f"{path}, line {number}: empty path or label.")
        if "\0" in image:
            raise DataError(f"{path}, line {number}: the path {image!r} holds a NUL character; no file can be named so.")
        resolved = (root / image).resolve()
        if not resolved.is_relative_to(root):
            raise DataError(f"{path}, line {number}: {image!r} points outside the CSV's folder {root}; refused.")
        if labels_of.setdefault(resolved, label) != label:
            raise DataError(f"{path}, line {number}: {image!r} is labelled both {labels_of[resolved]!r} and {label!r}.")
    if len(labels_of) < len(rows):
        log.warning("%s: dropped %d repeated row(s)", path, len(rows) - len(labels_of))
    classes = tuple(sorted(set(labels_of.values())))
    paths = list(labels_of)
    labels = np.asarray([classes.index(labels_of[p]) for p in paths], dtype=np.int64)
    return Dataset(path.stem, ImageSet(FileSource(paths), np.arange(len(paths)), labels, classes), None)


# --------------------------------------------------------------------------------------------
# Choosing classes and splitting.


def parse_classes(spec: str, classes: tuple[str, ...]) -> list[int]:
    """Class indices from ``spec``: indices and ranges ("0-4", "0,2,5-7") or names ("Bag,Sandal")."""
    chosen: list[int] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part in classes:
            chosen.append(classes.index(part))
            continue
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise DataError(f"Class {part!r} is neither a class name nor an index; classes: {list(classes)}.") from None
        if not 0 <= first <= last < len(classes):
            raise DataError(f"Class range {part!r} is outside 0-{len(classes) - 1}.")
        chosen += range(first, last + 1)
    chosen = list(dict.fromkeys(chosen))
    if len(chosen) < 2:
        raise DataError(f"--classes {spec!r} selects {len(chosen)} class(es); classification needs at least two.")
    return chosen


def _keep_classes(images: ImageSet, chosen: list[int]) -> ImageSet:
    remap = np.full(len(images.classes), -1)
    remap[chosen] = np.arange(len(chosen))
    positions = np.flatnonzero(np.isin(images.labels, chosen))
    return ImageSet(images.source, images.indices[positions], remap[images.labels[positions]],
                    tuple(images.classes[c] for c in chosen), images.fit)  # fmt: skip


def select_classes(dataset: Dataset, spec: str) -> Dataset:
    """The dataset restricted to the classes ``spec`` names (see :func:`parse_classes`), relabelled 0..k-1."""
    chosen = parse_classes(spec, dataset.train.classes)
    test, val = (_keep_classes(split, chosen) if split is not None else None for split in (dataset.test, dataset.val))
    return Dataset(dataset.name, _keep_classes(dataset.train, chosen), test, val)


def per_class_subset(images: ImageSet, limit: int, rng: np.random.Generator | int = 0) -> ImageSet:
    """At most ``limit`` random images of each class (seeded), in their original order."""
    if limit < 1:
        raise DataError(f"The per-class limit must be at least 1, got {limit}.")
    rng = np.random.default_rng(rng)
    taken = [rng.permutation(np.flatnonzero(images.labels == label))[:limit] for label in np.unique(images.labels)]
    return images.subset(np.sort(np.concatenate(taken)))


def split_dataset(
    dataset: Dataset,
    val_fraction: float = 0.1,
    samples_per_class: int | None = None,
    test_per_class: int | None = None,
    seed: int = 0,
) -> Splits:
    """Deterministic stratified train/validation split of the training pool (or the data set's own
    validation split, when it has one).

    Each class gives ``val_fraction`` of its images (at least one) to validation. With
    ``samples_per_class``, training keeps that many images per class and validation at most as
    many. ``test_per_class`` subsamples the test split the same way.
    """
    if not 0 < val_fraction < 1:
        raise DataError(f"--val-fraction must be between 0 and 1, got {val_fraction}.")
    rng = np.random.default_rng(seed)
    pool = dataset.train
    counts = pool.counts()
    too_small = [pool.classes[i] for i, n in enumerate(counts) if n < (2 if dataset.val is None else 1)]
    if too_small and dataset.val is not None:
        raise DataError(f"Classes {too_small} have no training image.")
    if too_small:
        raise DataError(f"Classes {too_small} have fewer than 2 images: one is needed for training and one for validation.")
    val_positions = []
    for label, count in enumerate(counts):
        positions = rng.permutation(np.flatnonzero(pool.labels == label))
        val_positions.append(positions[: max(1, round(count * val_fraction))])
    is_val = np.zeros(len(pool), dtype=bool)
    if dataset.val is None:
        is_val[np.concatenate(val_positions)] = True
    train = pool.subset(np.flatnonzero(~is_val))
    val = dataset.val if dataset.val is not None else pool.subset(np.flatnonzero(is_val))
    if samples_per_class is not None:
        train = per_class_subset(train, samples_per_class, rng)
        val = per_class_subset(val, samples_per_class, rng)
    test = dataset.test
    if test is not None and test_per_class is not None:
        test = per_class_subset(test, test_per_class, rng)
    return Splits(train, val, test, val_given=dataset.val is not None)
