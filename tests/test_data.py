import numpy as np
import pytest
from conftest import write_folder

from transferlab.data import per_class_subset, split_dataset
from transferlab.datasets import load_dataset
from transferlab.errors import DataError


def test_image_folder(image_folder):
    dataset = load_dataset(str(image_folder))
    assert dataset.train.classes == ("blue", "green", "red")
    assert len(dataset.train) == 36 and dataset.test is None
    assert dataset.train.counts().tolist() == [12, 12, 12]


def test_images_in_a_class_folders_sub_folders_belong_to_that_class(image_folder):
    nested = image_folder / "red" / "top"  # e.g. a class 'T-shirt/top' written as a path
    nested.mkdir()
    for moved in sorted((image_folder / "red").glob("*.png"))[:5]:
        moved.rename(nested / moved.name)
    dataset = load_dataset(str(image_folder))
    assert dataset.train.classes == ("blue", "green", "red")
    assert dataset.train.counts().tolist() == [12, 12, 12]


def test_train_test_layout(tmp_path):
    write_folder(tmp_path / "d" / "train", per_class=4)
    write_folder(tmp_path / "d" / "test", per_class=2)
    dataset = load_dataset(str(tmp_path / "d"))
    assert len(dataset.train) == 12 and len(dataset.test) == 6


@pytest.mark.parametrize("val_name, test_name", [("val", "test"), ("valid", None), ("validation", "testing"),
                                                  (None, "test")])  # fmt: skip
def test_the_usual_split_folder_names_are_recognised(tmp_path, val_name, test_name):
    write_folder(tmp_path / "d" / "train", per_class=6)
    for name, per_class in ((val_name, 3), (test_name, 2)):
        if name:
            write_folder(tmp_path / "d" / name, per_class=per_class, seed=4)
    dataset = load_dataset(str(tmp_path / "d"))
    assert dataset.train.classes == ("blue", "green", "red") and len(dataset.train) == 18
    assert (len(dataset.val) if dataset.val else None) == (9 if val_name else None)
    assert (len(dataset.test) if dataset.test else None) == (6 if test_name else None)
    splits = split_dataset(dataset, samples_per_class=5)
    if val_name:  # the given validation folder is the validation split; training keeps every image it may
        assert len(splits.val) == 9 and len(splits.train) == 15
    else:
        assert len(splits.train) == 15 and len(splits.val) == 3


@pytest.mark.parametrize(
    "folders, message",
    [
        (("train", "cats"), r"holds split folders \(train/\) beside what look like class folders \(cats\)"),
        (("val", "test"), "but no train/ folder"),
        (("train", "val", "valid"), "two val folders"),
    ],
)
def test_a_folder_that_looks_like_splits_but_is_not_a_layout_is_refused_with_a_hint(tmp_path, folders, message):
    for name in folders:
        write_folder(tmp_path / "d" / name, per_class=2)
    with pytest.raises(DataError, match=message):
        load_dataset(str(tmp_path / "d"))


def test_csv(image_folder, tmp_path):
    rows = ["path,label"] + [f"{p.relative_to(image_folder)},{p.parent.name}" for p in sorted(image_folder.rglob("*.png"))]
    (image_folder / "labels.csv").write_text("\n".join(rows))
    dataset = load_dataset(str(image_folder / "labels.csv"))
    assert len(dataset.train) == 36 and dataset.train.classes == ("blue", "green", "red")


def test_csv_missing_column(tmp_path):
    (tmp_path / "bad.csv").write_text("file,label\na.png,x\n")
    with pytest.raises(DataError, match="lacks the column.*path"):
        load_dataset(str(tmp_path / "bad.csv"))


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "holds nothing"),
        (lambda root: write_folder(root, classes=("red",)), "at least two"),
        (lambda root: (write_folder(root), (root / "empty").mkdir()), "holds no images"),
    ],
    ids=["missing", "empty-folder", "one-class", "empty-class"],
)
def test_bad_folders(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=message):
        load_dataset(str(root))


def test_split_is_stratified_disjoint_and_deterministic(image_folder):
    dataset = load_dataset(str(image_folder))
    a = split_dataset(dataset, val_fraction=0.25, seed=3)
    b = split_dataset(dataset, val_fraction=0.25, seed=3)
    assert np.array_equal(a.train.indices, b.train.indices)
    assert a.val.counts().tolist() == [3, 3, 3] and a.train.counts().tolist() == [9, 9, 9]
    assert not set(a.train.indices) & set(a.val.indices)
    other = split_dataset(dataset, val_fraction=0.25, seed=4)
    assert not np.array_equal(a.val.indices, other.val.indices)


def test_samples_per_class(image_folder):
    splits = split_dataset(load_dataset(str(image_folder)), samples_per_class=2)
    assert splits.train.counts().tolist() == [2, 2, 2]
    with pytest.raises(DataError, match="at least 1"):
        per_class_subset(splits.train, 0)


def test_fashion_mnist_from_data_dir(tiny_fashion_dir):
    dataset = load_dataset("fashion-mnist", tiny_fashion_dir)
    assert len(dataset.train) == 60 and len(dataset.test) == 20
    assert dataset.train.classes[0] == "T-shirt/top" and dataset.train.open(0).size == (28, 28)


def test_fashion_mnist_bad_dir(tmp_path, tiny_fashion_dir):
    with pytest.raises(DataError, match="lacks Fashion-MNIST files"):
        load_dataset("fashion-mnist", tmp_path / "nowhere")
    (tiny_fashion_dir / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset("fashion-mnist", tiny_fashion_dir)


def test_csv_path_with_a_nul_character_is_a_data_error(tmp_path):
    from transferlab.data import load_csv

    (tmp_path / "list.csv").write_text("path,label\n\x00,0\n")
    with pytest.raises(DataError, match="NUL character"):
        load_csv(tmp_path / "list.csv")


def test_training_and_validation_folders_join_into_one_labelled_set(tmp_path):
    """The advisor and the out-of-fold search read train and val together; given folders are two sources."""
    write_folder(tmp_path / "d" / "train", per_class=4)
    write_folder(tmp_path / "d" / "val", per_class=2, seed=3)
    dataset = load_dataset(str(tmp_path / "d"))
    joined = dataset.train.union(dataset.val)
    assert len(joined) == 18 and joined.counts().tolist() == [6, 6, 6]
    assert "/val/" in joined.describe(17) and np.asarray(joined.open(17)).tolist() == np.asarray(dataset.val.open(5)).tolist()
    assert joined.fingerprint() == dataset.train.union(dataset.val).fingerprint()
    assert joined.subset(np.arange(12)).fingerprint() != joined.subset(np.arange(6, 18)).fingerprint()


def test_a_fit_travels_with_the_images_through_subsets_splits_and_unions(image_folder):
    images = load_dataset(str(image_folder)).train
    squashed = images.with_fit("squash")
    assert images.fit == "crop" and images.with_fit("crop") is images
    assert squashed.subset(np.arange(5)).fit == per_class_subset(squashed, 2).fit == "squash"
    splits = split_dataset(load_dataset(str(image_folder)), 0.25, None, None, 0).with_fit("squash")
    assert {splits.train.fit, splits.val.fit} == {"squash"} and splits.train.union(splits.val).fit == "squash"
    # the same files made square another way are other inputs: their cached features must not be mixed up
    assert squashed.fingerprint() != images.fingerprint()
    with pytest.raises(DataError, match="one fit"):
        images.union(squashed)


def test_an_image_sets_sizes_come_from_file_headers_and_array_shapes(tmp_path):
    from PIL import Image

    from transferlab.data import labelled

    (tmp_path / "a").mkdir()
    Image.new("RGB", (90, 30)).save(tmp_path / "a" / "wide.png")
    Image.new("RGB", (30, 60)).save(tmp_path / "a" / "tall.png")
    (tmp_path / "b").mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "b" / "square.png")
    files = load_dataset(str(tmp_path)).train
    assert sorted(files.size(i) for i in range(len(files))) == [(30, 60), (40, 40), (90, 30)]
    arrays = labelled(np.zeros((2, 28, 56), dtype=np.uint8), np.array([0, 1]), ("x", "y"), "strips")
    assert arrays.size(1) == (56, 28)
