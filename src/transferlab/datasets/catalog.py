"""The catalog of built-in data sets, by the names users type, and the resolver of every ``DATA``
argument: a built-in name, an image folder or a CSV file.

Every built-in set installs offline (Debian, PyPI, or generated here) and has a fixed test split
of at least 1,000 images where its source allows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..data import Dataset, load_csv, load_image_folder
from ..errors import DataError
from . import arrays, generated, skimage_files


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    description: str
    load: Callable[[str | Path | None], Dataset]  # (data_dir) -> Dataset


def _without_dir(load: Callable[[], Dataset]) -> Callable[[str | Path | None], Dataset]:
    return lambda data_dir: load()


CATALOG = {
    entry.name: entry
    for entry in (
        BuiltinDataset("fashion-mnist", "Zalando's clothing photos, 10 classes, 28x28 grey; 60,000 + 10,000 test "
                       "(Debian's dataset-fashion-mnist)", arrays.load_fashion_mnist),  # fmt: skip
        BuiltinDataset("digits", "scikit-learn's handwritten digits, 10 classes, 8x8; 1,257 + 540 test",
                       _without_dir(arrays.load_digits)),  # fmt: skip
        BuiltinDataset("animal-mnist", "animal silhouettes from photos, 10 classes, 28x28; 8,000 + 2,000 test "
                       "(PyPI animal-mnist)", _without_dir(arrays.load_animal_mnist)),  # fmt: skip
        BuiltinDataset("textures", "brick, grass, gravel: 32x32 patches of scikit-image's photographs; 3,000 + 1,002 "
                       "test", _without_dir(skimage_files.load_textures)),  # fmt: skip
        BuiltinDataset("faces", "scikit-image's lfw_subset: face or not, 25x25; 140 + 60 test",
                       _without_dir(skimage_files.load_faces)),  # fmt: skip
        BuiltinDataset("count", "generated: how many discs (1-5), 32x32; 5,000 + 1,250 test",
                       _without_dir(generated.load_count)),  # fmt: skip
        BuiltinDataset("orientation", "generated: a bar at 0/45/90/135 degrees, 32x32; 4,000 + 1,000 test",
                       _without_dir(generated.load_orientation)),  # fmt: skip
        BuiltinDataset("glyphs", "generated: letters A-K in several fonts, 32x32; 10,000 + 2,500 test",
                       _without_dir(generated.load_glyphs)),  # fmt: skip
        BuiltinDataset("colour-shape", "generated: the shape of the red one of two shapes, 32x32; 3,000 + 750 test",
                       _without_dir(generated.load_colour_shape)),  # fmt: skip
    )
}


def load_dataset(spec: str, data_dir: str | Path | None = None) -> Dataset:
    """Resolve ``spec``: a built-in name (:data:`CATALOG`), an image folder, or a ``.csv`` file."""
    if spec in CATALOG:
        dataset = CATALOG[spec].load(data_dir)
    else:
        path = Path(spec)
        if not path.exists():
            raise DataError(f"Data path {spec!r} does not exist (expected a folder, a .csv file, or one of the "
                            f"built-in sets: {', '.join(CATALOG)}).")  # fmt: skip
        if path.is_dir():
            dataset = load_image_folder(path)
        elif path.suffix.lower() == ".csv":
            dataset = load_csv(path)
        else:
            raise DataError(f"{spec!r} is a file but not a .csv; expected a folder root/<class>/<image> or a CSV.")
    if len(dataset.train.classes) < 2:
        raise DataError(f"{spec!r} has {len(dataset.train.classes)} class(es); classification needs at least two.")
    return dataset
