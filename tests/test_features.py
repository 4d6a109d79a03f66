import logging

import numpy as np
import pytest
from PIL import Image
from torch import nn

from transferlab.datasets import load_dataset
from transferlab.errors import DataError
from transferlab.features import DecodedImages, FeatureCache, cached_features
from transferlab.images import open_image, resize_center_crop


class MeanColour(nn.Module):
    """A stand-in body: mean colour per channel, so features are easy to check by hand."""

    def forward(self, x):
        return x.mean((2, 3))


def test_cache_hit_gives_identical_features(image_folder, tmp_path):
    images = load_dataset(str(image_folder)).train
    cache = FeatureCache(tmp_path / "cache")
    first, hit1 = cached_features(MeanColour(), {"model": "m"}, images, 16, cache)
    second, hit2 = cached_features(MeanColour(), {"model": "m"}, images, 16, cache)
    assert (hit1, hit2) == (False, True)
    assert np.array_equal(first.values, second.values) and first.values.shape == (36, 3)
    red = images.classes.index("red")
    assert first.values[images.labels == red, 0].mean() > first.values[images.labels == red, 2].mean()
    _, hit3 = cached_features(MeanColour(), {"model": "m"}, images, 24, cache)
    _, hit4 = cached_features(MeanColour(), {"model": "other"}, images, 16, cache)
    assert not hit3 and not hit4
    assert not list((tmp_path / "cache").glob(".*")), "no staging folders left behind"


def test_corrupt_image_is_skipped_with_named_warning(image_folder, tmp_path, caplog):
    bad = image_folder / "red" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    images = load_dataset(str(image_folder)).train
    with caplog.at_level(logging.WARNING):
        features, _ = cached_features(MeanColour(), {"model": "m"}, images, 16, FeatureCache(tmp_path / "c"))
    assert features.skipped == (str(bad),) and features.valid.sum() == 36
    assert "broken.png" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # another pass over the same images (another model, another resolution)
        again, _ = cached_features(MeanColour(), {"model": "other"}, images, 24, FeatureCache(tmp_path / "c"))
    assert again.skipped == (str(bad),) and "broken.png" not in caplog.text  # named once a run, counted every pass
    with pytest.raises(DataError, match="broken.png"):
        cached_features(MeanColour(), {"model": "m"}, images, 16, None, strict=True)
    with pytest.raises(DataError, match="broken.png"):  # also when the cache holds it as unreadable
        cached_features(MeanColour(), {"model": "m"}, images, 16, FeatureCache(tmp_path / "c"), strict=True)


class CountingMeanColour(MeanColour):
    """MeanColour that counts the images it has been run over."""

    def __init__(self):
        super().__init__()
        self.images = 0

    def forward(self, x):
        self.images += len(x)
        return super().forward(x)


def test_subsets_of_images_a_run_has_passed_are_gathered_not_computed_again(image_folder, tmp_path):
    """The folds of the out-of-fold check: their training, validation and scored images are subsets
    of the labelled images (train and validation splits joined), each fold's features gathered from
    the rows earlier passes computed, equal to computing them."""
    images = load_dataset(str(image_folder)).train
    train = images.subset(np.arange(0, 24))
    val = load_dataset(str(image_folder)).train.subset(np.arange(24, 36))  # as a val/ folder: files of its own
    labelled = train.union(val)
    assert labelled.source not in (train.source, val.source), "joined: the fold's images come through another source"
    model, cache = CountingMeanColour(), FeatureCache(tmp_path / "cache")
    cached_features(model, {"model": "m"}, train, 16, cache)
    cached_features(model, {"model": "m"}, val, 16, cache)
    assert model.images == 36
    fold = labelled.subset(np.asarray([3, 30, 7, 25, 0]))
    gathered, hit = cached_features(model, {"model": "m"}, fold, 16, cache)
    assert hit and model.images == 36, "every image of the fold had been passed: nothing computed"
    computed, _ = cached_features(MeanColour(), {"model": "m"}, fold, 16, None)
    np.testing.assert_allclose(gathered.values, computed.values, rtol=1e-6)
    assert gathered.valid.all() and gathered.skipped == ()
    cached_features(model, {"model": "m"}, fold, 24, cache)  # another resolution: another computation
    cached_features(model, {"model": "other"}, fold, 16, cache)  # another model
    assert model.images == 36 + 2 * len(fold)


def test_of_a_subset_partly_seen_only_the_unseen_images_are_computed(image_folder, tmp_path):
    images = load_dataset(str(image_folder)).train
    model, cache = CountingMeanColour(), FeatureCache(tmp_path / "cache")
    cached_features(model, {"model": "m"}, images.subset(np.arange(0, 20)), 16, cache)
    partly_seen = images.subset(np.arange(15, 25))
    features, hit = cached_features(model, {"model": "m"}, partly_seen, 16, cache)
    assert not hit and model.images == 20 + 5  # not all from the cache
    computed, _ = cached_features(MeanColour(), {"model": "m"}, partly_seen, 16, None)
    np.testing.assert_allclose(features.values, computed.values, rtol=1e-6)


def test_gathered_rows_keep_an_unreadable_image_unreadable(image_folder, tmp_path):
    bad = image_folder / "red" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    images = load_dataset(str(image_folder)).train
    cache = FeatureCache(tmp_path / "cache")
    cached_features(MeanColour(), {"model": "m"}, images, 16, cache)
    position = next(i for i in range(len(images)) if images.describe(i) == str(bad))
    subset = images.subset(np.asarray([position, (position + 1) % len(images)]))
    gathered, hit = cached_features(MeanColour(), {"model": "m"}, subset, 16, cache)
    assert hit and gathered.valid.tolist() == [False, True] and gathered.skipped == (str(bad),)
    with pytest.raises(DataError, match="broken.png"):
        cached_features(MeanColour(), {"model": "m"}, subset, 16, cache, strict=True)


def test_a_pass_decodes_a_large_jpeg_at_the_reduced_scale_of_its_resolution(tmp_path):
    """Every pass (features, decoded pixels, predict) opens images through DecodedImages: a camera
    JPEG decodes at libjpeg's reduced scale down to the pass's resolution, not whole."""
    x, y = np.meshgrid(np.linspace(0, 1, 1600), np.linspace(0, 1, 1200))
    scene = np.stack([np.sin(8 * x), np.cos(5 * y), x * y], 2) * 100 + 120
    grain = np.random.default_rng(0).normal(0, 6, scene.shape)
    for name in ("day", "night"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        Image.fromarray((scene + grain).clip(0, 255).astype(np.uint8)).save(tmp_path / "photos" / name / "a.jpg")
    images = load_dataset(str(tmp_path / "photos")).train
    path = images.describe(0)
    pixels = DecodedImages(images, 64)[0][0].permute(1, 2, 0).numpy()
    assert np.array_equal(pixels, resize_center_crop(open_image(path, min_side=64), 64))
    assert not np.array_equal(pixels, resize_center_crop(open_image(path), 64))
