"""The built-in data sets: each loads offline with its documented size, splits and classes."""

import gzip
import io
import pickle

import numpy as np
import pytest

from transferlab.datasets import CATALOG, load_dataset, packaged
from transferlab.datasets.catalog import CROSS_STYLES
from transferlab.datasets.arrays import _ArraysOnly
from transferlab.errors import DataError

SIZES = {  # name: (classes, training images, test images)
    "digits": (10, 1258, 539),
    "animal-mnist": (10, 8000, 2000),
    "textures": (3, 3000, 1002),
    "faces": (2, 140, 60),
    "count": (5, 5000, 1250),
    "orientation": (4, 4000, 1000),
    "glyphs": (10, 10000, 2500),
    "colour-shape": (3, 3000, 750),
}


@pytest.mark.parametrize("name", list(SIZES))
def test_builtin_set_loads_with_its_sizes(name):
    dataset = load_dataset(name)
    classes, train, test = SIZES[name]
    assert (len(dataset.train.classes), len(dataset.train), len(dataset.test)) == (classes, train, test)
    assert dataset.test.classes == dataset.train.classes
    assert set(np.unique(dataset.test.labels)) == set(range(classes))  # every class in the test split
    assert dataset.train.open(0).mode == "RGB"


def test_every_catalog_entry_is_tested_here_or_in_test_packaged_or_is_fashion_mnist():
    packaged_sets = {name for name, entry in CATALOG.items()
                     if getattr(entry.load, "func", entry.load).__module__ == packaged.__name__}  # fmt: skip
    assert packaged_sets == {*(f"emoji-{style}" for style in packaged.EMOJI_STYLES), "furniture", "cartoons",
                             *(f"emoji-{a}-to-{b}" for a, b in CROSS_STYLES)}  # fmt: skip
    assert set(CATALOG) == {*SIZES, "fashion-mnist", *packaged_sets}


def test_generated_sets_are_deterministic_and_their_splits_differ():
    first, second = load_dataset("orientation"), load_dataset("orientation")
    assert first.train.fingerprint() == second.train.fingerprint()
    assert np.asarray(first.train.open(0)).tolist() != np.asarray(first.test.open(0)).tolist()


def test_texture_patches_of_train_and_test_come_from_different_parts_of_each_photo():
    dataset = load_dataset("textures")
    train = {np.asarray(dataset.train.open(i)).tobytes() for i in range(0, 3000, 7)}
    assert not any(np.asarray(dataset.test.open(i)).tobytes() in train for i in range(len(dataset.test)))


def test_animal_mnist_reader_unpickles_arrays_only():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    payload = io.BytesIO(gzip.compress(pickle.dumps(Evil())))
    with pytest.raises(DataError, match="refusing to unpickle builtins.print"):
        _ArraysOnly(gzip.open(payload)).load()
    arrays = io.BytesIO(pickle.dumps(np.arange(6, dtype=np.uint8).reshape(2, 3)))
    assert _ArraysOnly(arrays).load().tolist() == [[0, 1, 2], [3, 4, 5]]


def test_unknown_name_lists_the_builtin_sets():
    with pytest.raises(DataError, match="built-in sets: fashion-mnist, digits, animal-mnist"):
        load_dataset("cifar10")
