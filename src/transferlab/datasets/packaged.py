"""Colour image sets read out of the archives of npm and Debian packages (downloaded, never
installed): emoji in five drawing styles, Sweet Home 3D's furniture renders, pysiogame's cartoons.

``make pool-data`` puts the archives into :func:`archive_dir`; the first load of a set extracts
its images (alpha composited onto white, RGB PNG) into ``<cache>/datasets/<set>/<class>/`` and
later loads read that folder, as a user's own image folder is read. A missing archive is one line
naming the command that fetches it.

Cross-style sets train on one style and validate and test on another, split by emoji: no emoji
is on both sides, so the shift is the drawing style's alone.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..cachedir import default_cache_root
from ..data import Dataset, ImageSet, load_image_folder, split_off_test
from ..errors import DataError
from ..images import to_rgb

log = logging.getLogger(__name__)

TEST_FRACTION = 0.3  # the fixed test split of a single-style set

# Emoji subcategories (emoji.json's ``subcategory``) merged into object classes.
EMOJI_CLASSES = {
    "animal": ("animal-amphibian", "animal-bird", "animal-bug", "animal-mammal", "animal-marine", "animal-reptile"),
    "plant": ("plant-flower", "plant-other"),
    "food": ("food-asian", "food-fruit", "food-prepared", "food-sweet", "food-vegetable"),
    "drink": ("drink", "dishware"),
    "vehicle": ("transport-air", "transport-ground", "transport-water"),
    "clothing": ("clothing",),
    "building": ("place-building", "place-religious"),
    "tool": ("tool", "household", "office"),
}
EMOJI_STYLES = ("apple", "google", "twitter", "facebook", "fluent")
EMOJI_VERSION = "16.0.0"
FLUENT_PACKAGE = "@lobehub/fluent-emoji-3d@1.1.0"
# Sweet Home 3D's categories whose objects belong to one class only (rooms share their chairs and lamps).
FURNITURE_CLASSES = ("Bathroom", "Characters", "Doors and windows", "Lights", "Vehicles")
# pysiogame's art4apps themes with one subject each (actions, body and nature carry pointer arrows or are tiny).
CARTOON_THEMES = ("animals", "clothes_n_accessories", "construction", "food", "fruit_n_veg", "jobs", "people", "sport",
                  "transport")  # fmt: skip
CARTOON_ROOT = "usr/share/games/pysiogame/res/images/art4apps/"
FURNITURE_ROOT = "usr/share/sweethome3d/furniture/"


@dataclass(frozen=True)
class Archive:
    """A package archive: its file name and the command that fetches it into the archive folder."""

    file: str
    fetch: str


def _emoji_archive(style: str) -> Archive:
    if style == "fluent":
        return Archive("lobehub-fluent-emoji-3d-1.1.0.tgz", f"npm pack {FLUENT_PACKAGE}")
    return Archive(f"emoji-datasource-{style}-{EMOJI_VERSION}.tgz", f"npm pack emoji-datasource-{style}@{EMOJI_VERSION}")


EMOJI_METADATA = _emoji_archive("apple")  # emoji.json, the labels of every style, comes with each vendor's package
FURNITURE = Archive("sweethome3d-furniture_1.8-1_all.deb", "apt-get download sweethome3d-furniture=1.8-1")
CARTOONS = Archive("pysiogame_4.20.01-1_all.deb", "apt-get download pysiogame=4.20.01-1")


def archive_dir(data_dir: str | Path | None = None) -> Path:
    """Where the package archives are: ``--data-dir`` when given, else ``<cache>/archives``."""
    return Path(data_dir) if data_dir else default_cache_root() / "archives"


def archive_path(archive: Archive, data_dir: str | Path | None) -> Path:
    """The archive's file, or a one-line DataError naming the command that fetches it."""
    folder = archive_dir(data_dir)
    path = folder / archive.file
    if not path.is_file():
        raise DataError(f"{path} is missing: run `make pool-data` (or `cd {folder} && {archive.fetch}`).")
    return path


# --------------------------------------------------------------------------------------------
# Reading archives: npm's .tgz, Debian's .deb (an ar archive around data.tar.*).


def _tar_members(tar: tarfile.TarFile, pattern: str) -> Iterator[tuple[str, bytes]]:
    for member in tar:
        if member.isfile() and re.fullmatch(pattern, member.name.removeprefix("./")):
            yield member.name.removeprefix("./"), tar.extractfile(member).read()


def _deb_data(path: Path) -> tarfile.TarFile:
    """The ``data.tar.*`` of a Debian package, opened (an ``ar`` archive: 8-byte magic, then
    60-byte headers each followed by its member, padded to an even length)."""
    raw = path.read_bytes()
    if not raw.startswith(b"!<arch>\n"):
        raise DataError(f"{path} is not a Debian package (no ar header); fetch it again.")
    offset = 8
    while offset + 60 <= len(raw):
        header = raw[offset : offset + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
        if name.startswith("data.tar"):
            return tarfile.open(fileobj=io.BytesIO(raw[offset + 60 : offset + 60 + size]))
        offset += 60 + size + size % 2
    raise DataError(f"{path} holds no data.tar: not a Debian package; fetch it again.")


def _rgb(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return to_rgb(image)


# --------------------------------------------------------------------------------------------
# Extracting once into a folder of the cache.


Images = Callable[[], Iterator[tuple[str, str, Image.Image]]]  # () -> (class, file stem, image) for each image


def extracted(name: str, images: Images) -> Path:
    """The cache folder of set ``name``, written from ``images()`` (class, stem, image) on first use;
    a folder is complete or absent (written aside, then renamed)."""
    folder = default_cache_root() / "datasets" / name
    if (folder / ".complete").exists():
        return folder
    partial = folder.with_name(f"{name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    count = 0
    try:
        for label, stem, image in images():
            (partial / label).mkdir(exist_ok=True)
            image.save(partial / label / f"{stem}.png")
            count += 1
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    (partial / ".complete").touch()
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    log.info("%s: %d images extracted into %s", name, count, folder)
    return folder


def _with_test_split(name: str, images: Images) -> Dataset:
    """Set ``name``'s extracted folder with a fixed stratified test split."""
    return split_off_test(load_image_folder(extracted(name, images)).train, TEST_FRACTION, name)


def emoji_labels(data_dir: str | Path | None) -> dict[str, str]:
    """Each object emoji's image stem (its codepoints) and class, from emoji.json."""
    with tarfile.open(archive_path(EMOJI_METADATA, data_dir)) as tar:
        entries = json.loads(dict(_tar_members(tar, r"package/emoji\.json"))["package/emoji.json"])
    class_of = {sub: label for label, subs in EMOJI_CLASSES.items() for sub in subs}
    return {Path(e["image"]).stem: class_of[e["subcategory"]] for e in entries if e.get("subcategory") in class_of}


def _emoji_images(style: str, data_dir: str | Path | None) -> Iterator[tuple[str, str, Image.Image]]:
    labels = emoji_labels(data_dir)
    pattern = r"package/assets/[0-9a-f-]+\.webp" if style == "fluent" else rf"package/img/{style}/64/[0-9a-f-]+\.png"
    with tarfile.open(archive_path(_emoji_archive(style), data_dir)) as tar:
        for name, data in _tar_members(tar, pattern):
            if Path(name).stem in labels:
                yield labels[Path(name).stem], Path(name).stem, _rgb(data)


def _emoji_folder(style: str, data_dir: str | Path | None) -> Path:
    return extracted(f"emoji-{style}", lambda: _emoji_images(style, data_dir))


def load_emoji(style: str, data_dir: str | Path | None = None) -> Dataset:
    """One drawing style's object emoji by class, with a fixed stratified test split."""
    return _with_test_split(f"emoji-{style}", lambda: _emoji_images(style, data_dir))


def _stems(images: ImageSet) -> np.ndarray:
    return np.asarray([Path(images.describe(i)).stem for i in range(len(images))])


def load_emoji_cross(train_style: str, test_style: str, data_dir: str | Path | None = None) -> Dataset:
    """Train on ``train_style``, validate and test on ``test_style``: the emoji drawn in both styles
    split per class (seeded) into half for training, a quarter for validation, a quarter for test."""
    source = load_image_folder(_emoji_folder(train_style, data_dir)).train
    target = load_image_folder(_emoji_folder(test_style, data_dir)).train
    if source.classes != target.classes:
        raise DataError(f"emoji-{train_style} and emoji-{test_style} hold different classes; delete their cache folders.")
    shared = sorted(set(_stems(source)) & set(_stems(target)))
    class_of = dict(zip(_stems(target), target.labels))
    rng = np.random.default_rng(0)
    side = {}
    for label in range(len(target.classes)):
        stems = rng.permutation([s for s in shared if class_of[s] == label])
        half, three_quarters = len(stems) // 2, (3 * len(stems)) // 4
        side.update({s: "train" for s in stems[:half]} | {s: "val" for s in stems[half:three_quarters]}
                    | {s: "test" for s in stems[three_quarters:]})  # fmt: skip

    def part(images: ImageSet, name: str) -> ImageSet:
        return images.subset(np.flatnonzero([side.get(s) == name for s in _stems(images)]))

    return Dataset(f"emoji-{train_style}-to-{test_style}", part(source, "train"), part(target, "test"), part(target, "val"))


def _properties(text: str) -> dict[int, dict[str, str]]:
    """A furniture catalog's ``key#N=value`` lines, by N."""
    items: dict[int, dict[str, str]] = {}
    for line in text.splitlines():
        match = re.match(r"(\w+)#(\d+)\s*=\s*(.*)", line)
        if match:
            items.setdefault(int(match[2]), {})[match[1]] = match[3].strip()
    return items


def _furniture_images(data_dir: str | Path | None) -> Iterator[tuple[str, str, Image.Image]]:
    with _deb_data(archive_path(FURNITURE, data_dir)) as tar:
        for name, data in _tar_members(tar, re.escape(FURNITURE_ROOT) + r"[^/]+\.sh3f"):
            with zipfile.ZipFile(io.BytesIO(data)) as catalog:
                text = catalog.read("PluginFurnitureCatalog.properties").decode("latin-1")
                for number, item in _properties(text).items():
                    if item.get("category") in FURNITURE_CLASSES and item.get("icon"):
                        yield item["category"], f"{Path(name).stem}-{number}", _rgb(catalog.read(item["icon"].lstrip("/")))


def load_furniture(data_dir: str | Path | None = None) -> Dataset:
    """Sweet Home 3D's rendered catalogue objects (128x128) by category, with a fixed test split."""
    return _with_test_split("furniture", lambda: _furniture_images(data_dir))


def _cartoon_images(data_dir: str | Path | None) -> Iterator[tuple[str, str, Image.Image]]:
    themes = "|".join(CARTOON_THEMES)
    with _deb_data(archive_path(CARTOONS, data_dir)) as tar:
        for name, data in _tar_members(tar, re.escape(CARTOON_ROOT) + rf"({themes})/[^/]+\.(jpg|png)"):
            theme = name.removeprefix(CARTOON_ROOT).split("/")[0]
            yield theme, Path(name).name.replace(".", "-"), _rgb(data)  # a .jpg and a .png may share a stem


def load_cartoons(data_dir: str | Path | None = None) -> Dataset:
    """pysiogame's hand-drawn colour pictures (200x200) by theme, with a fixed test split."""
    return _with_test_split("cartoons", lambda: _cartoon_images(data_dir))
