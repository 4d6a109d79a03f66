"""Unlabelled images (``--unlabeled``): label propagation finds what the clusters say, the guard
keeps them out unless validation says they help, they never come from a test split, and bad
folders give one-line errors or counted skips."""

import json
import shutil

import numpy as np
import pytest
import torch

import transferlab as tl
from transferlab.data import Splits, labelled
from transferlab.datasets import load_dataset
from transferlab.errors import DataError
from transferlab.heads import make_head
from transferlab.semisupervised import propagate, pseudo_labelled
from transferlab.trainer.pseudo_labels import fit_with_unlabeled, labelled_weight
from transferlab.unlabeled import NO_LABEL, apart_from, at_most, hidden_labels, load_unlabeled

from conftest import COLOURS, assert_one_line_error, make_image, run_here, write_folder


def test_propagation_labels_two_clusters_per_class_from_one_label_each():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 64)) * 5  # classes 0, 1, 2: clusters 0/3, 1/4, 2/5
    labelled_x = np.stack([centres[j] + 0.3 * rng.normal(size=64) for j in range(6)])
    labels = np.arange(6) % 3
    unlabeled = np.vstack([centres[j] + 0.3 * rng.normal(size=(50, 64)) for j in range(6)])
    truth = np.repeat(np.arange(6) % 3, 50)
    pseudo = propagate(labelled_x, labels, unlabeled, 3)
    assert (pseudo.labels == truth).all()
    kept = pseudo_labelled(pseudo, 3)
    assert np.bincount(pseudo.labels[kept], minlength=3).tolist() == [100, 100, 100]  # every class, none flooding


def _fake_fit(val_accuracy_with: float):
    """A fit that sets the head's bias to the number of rows it saw and reports a validation
    accuracy of 0.8 on the labelled rows alone, ``val_accuracy_with`` with more."""

    def fit(head, x, y):
        with torch.no_grad():
            head.fc.bias.fill_(len(x))
        accuracy = 0.8 if len(x) == 6 else val_accuracy_with
        return [{"epoch": 1, "val_loss": 0.5, "val_accuracy": accuracy, "kept": 1}]

    return fit


@pytest.mark.parametrize("with_them, used", [(0.7, False), (0.8, False), (0.9, True)])
def test_the_guard_keeps_unlabelled_images_only_when_validation_prefers_them(with_them, used):
    rng = np.random.default_rng(0)
    train_x, train_y = rng.normal(size=(6, 8)).astype(np.float32), np.array([0, 1, 2] * 2)
    head = make_head(8, 3)
    history, report = fit_with_unlabeled(head, train_x, train_y, rng.normal(size=(60, 8)).astype(np.float32),
                                         _fake_fit(with_them), 3)  # fmt: skip
    assert report["used"] is used and (report["val_accuracy_without"], report["val_accuracy_with"]) == (0.8, with_them)
    rows = 6 * labelled_weight(6, report["pseudo_labelled"]) + report["pseudo_labelled"]  # labelled images repeated
    assert float(head.fc.bias[0].detach()) == (rows if used else 6)  # the kept head is the one reported
    assert history[0]["val_accuracy"] == (with_them if used else 0.8)


@pytest.mark.parametrize("with_them, used", [(0.7, False), (0.9, True)])
def test_the_kept_fit_is_done_again_by_refit_once_validation_has_chosen(with_them, used):
    def refit(head, x, y):
        with torch.no_grad():
            head.fc.bias.fill_(-len(x))
        return [{"epoch": 1, "val_loss": 0.1, "val_accuracy": 1.0, "kept": 1}]

    rng = np.random.default_rng(0)
    train_x, train_y = rng.normal(size=(6, 8)).astype(np.float32), np.array([0, 1, 2] * 2)
    head = make_head(8, 3)
    history, report = fit_with_unlabeled(head, train_x, train_y, rng.normal(size=(60, 8)).astype(np.float32),
                                         _fake_fit(with_them), 3, refit=refit)  # fmt: skip
    rows = 6 * labelled_weight(6, report["pseudo_labelled"]) + report["pseudo_labelled"]
    assert report["used"] is used and float(head.fc.bias[0].detach()) == -(rows if used else 6)  # the kept images, refitted
    assert history[0]["val_accuracy"] == 1.0 and report["val_accuracy_without"] == 0.8  # the guard's figures: held-out fits'


@pytest.fixture(scope="module")
def two_colours(tmp_path_factory):
    """red and green labelled (train and test), and folders of unlabelled images."""
    root = tmp_path_factory.mktemp("unlabeled")
    write_folder(root / "d" / "train", per_class=20, classes=("red", "green"))
    write_folder(root / "d" / "test", per_class=10, classes=("red", "green"), seed=5)
    rng = np.random.default_rng(9)
    for folder, colours in (("known", ("red", "green")), ("unknown", ("blue",))):
        (root / folder).mkdir()
        for i in range(40):
            make_image(COLOURS[colours[i % len(colours)]], rng).save(root / folder / f"{i:03d}.png")
    return root


def _train(root, out: str, unlabeled: str | None) -> dict:
    config = tl.TrainConfig(data=str(root / "d"), strategy="head", out=str(root / f"run-{out}"), resolution=32, val_fraction=0.5,
                            cache_dir=str(root / "cache"), unlabeled=unlabeled)  # fmt: skip
    return tl.train(config).metrics


def test_unlabelled_images_of_an_unknown_class_do_not_hurt(two_colours):
    without = _train(two_colours, "without", None)
    known = _train(two_colours, "known", str(two_colours / "known"))
    unknown = _train(two_colours, "unknown", str(two_colours / "unknown"))
    assert "unlabeled" not in without and known["unlabeled"]["images"] == 40
    report = unknown["unlabeled"]
    assert report["images"] == 40 and report["method"] == "propagation"
    assert unknown["balanced_accuracy"] >= without["balanced_accuracy"] - 0.01  # the guard's promise
    assert not report["used"] or report["val_accuracy_with"] > report["val_accuracy_without"]
    if not report["used"]:  # the run is the one without them (validation images fitted too), and says why
        assert unknown["history"] == without["history"] and "no better" in report["reason"]
    assert json.loads((two_colours / "run-unknown" / "metrics.json").read_text())["unlabeled"] == report


def test_a_data_folder_s_own_unlabeled_folder_is_found_and_is_not_a_class(two_colours, tmp_path):
    data = tmp_path / "d"
    shutil.copytree(two_colours / "d", data)
    shutil.copytree(two_colours / "known", data / "unlabeled")
    assert load_dataset(str(data)).train.classes == ("green", "red")
    config = tl.TrainConfig(data=str(data), strategy="head", out=str(tmp_path / "run"), resolution=32, val_fraction=0.3,
                            cache_dir=str(two_colours / "cache"))  # fmt: skip
    assert tl.train(config).metrics["unlabeled"]["images"] == 40


def test_advise_says_what_the_plan_does_with_unlabelled_images(two_colours):
    plan = tl.advise(str(two_colours / "d"), resolution=32, val_fraction=0.5, unlabeled=str(two_colours / "known"),
                     cache_dir=str(two_colours / "cache"))  # fmt: skip
    learns = "unlabeled" in tl.STRATEGIES[plan.strategy].options
    said = "learns from them too" if learns else "does not learn from them"
    assert f"40 unlabelled images: '{plan.strategy}' {said}" in plan.explanation


def test_unlabelled_copies_of_labelled_images_are_left_out_and_counted(two_colours, tmp_path, caplog):
    folder = tmp_path / "u"
    shutil.copytree(two_colours / "known", folder)
    test_files = sorted((two_colours / "d" / "test" / "red").iterdir())[:3]
    for i, path in enumerate(test_files):
        shutil.copy(path, folder / f"copy-{i}.png")
    dataset = load_dataset(str(two_colours / "d"))
    splits = Splits(dataset.train, dataset.train, dataset.test)
    kept = apart_from(load_unlabeled(folder), splits)
    assert len(kept) == 40 and "left out 3 image(s) that are also in the test split" in caplog.text
    assert (kept.labels == NO_LABEL).all()


def test_a_large_unlabelled_folder_is_sampled_to_the_limit(two_colours, caplog):
    images = load_unlabeled(two_colours / "known")
    sample = at_most(images, limit=15, seed=3)
    assert len(sample) == 15 and len(set(sample.indices.tolist())) == 15 and "a seeded sample of 15" in caplog.text
    assert at_most(images, limit=15, seed=3).indices.tolist() == sample.indices.tolist() and at_most(images) is images


def test_simulated_unlabelled_images_never_come_from_the_test_split():
    pixels = np.zeros((40, 8, 8, 3), dtype=np.uint8)
    everything = labelled(pixels, np.arange(40) % 2, ("a", "b"), "toy")
    pool, test = everything.subset(np.arange(30)), everything.subset(np.arange(30, 40))
    splits = Splits(pool.subset(np.arange(4)), pool.subset(np.arange(4, 8)), test)
    hidden = hidden_labels(pool, splits, per_class=100)
    assert len(hidden) == 22 and not np.isin(hidden.indices, np.r_[0:8, 30:40]).any()
    leaking = Splits(splits.train, splits.val, everything.subset(np.arange(20, 40)))
    with pytest.raises(DataError, match="no unlabelled image may come from it"):
        hidden_labels(pool, leaking, per_class=100)


def test_corrupt_unlabelled_images_are_skipped_and_counted(two_colours, tmp_path):
    folder = tmp_path / "u"
    shutil.copytree(two_colours / "known", folder)
    (folder / "broken.png").write_bytes(b"not an image")
    metrics = _train(two_colours, "corrupt", str(folder))
    assert metrics["unlabeled"]["images"] == 40 and metrics["unlabeled"]["unreadable"] == 1


@pytest.mark.parametrize(
    "setup, expected",
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "holds no images"),
        (lambda root: write_folder(root, per_class=2), "holds class folders"),
    ],
    ids=["missing", "empty", "class-folders"],
)
def test_bad_unlabelled_folders_give_one_line_errors(two_colours, tmp_path, setup, expected):
    setup(tmp_path / "u")
    result = run_here("train", str(two_colours / "d"), "--strategy", "head", "--unlabeled", str(tmp_path / "u"),
                 "--resolution", "32", "--out", str(tmp_path / "run"), cache=two_colours / "cache")  # fmt: skip
    assert_one_line_error(result, expected)
    assert not (tmp_path / "run").exists()  # nothing left behind


def test_unlabeled_with_a_strategy_that_trains_the_body_is_refused(tmp_path):
    result = run_here("train", "digits", "--strategy", "finetune", "--unlabeled", str(tmp_path), cache=tmp_path / "cache")
    assert_one_line_error(result, "--unlabeled applies to head, truncate, multicut, ensemble, not to --strategy finetune.")
