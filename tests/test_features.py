import logging

import numpy as np
import pytest
from torch import nn

from transferlab.datasets import load_dataset
from transferlab.errors import DataError
from transferlab.features import FeatureCache, cached_features


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
    with pytest.raises(DataError, match="broken.png"):
        cached_features(MeanColour(), {"model": "m"}, images, 16, None, strict=True)
    with pytest.raises(DataError, match="broken.png"):  # also when the cache holds it as unreadable
        cached_features(MeanColour(), {"model": "m"}, images, 16, FeatureCache(tmp_path / "c"), strict=True)
