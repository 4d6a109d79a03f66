import logging

import numpy as np
import pytest
import torch
from torch import nn

from transferlab.data import load_dataset
from transferlab.errors import ConfigError, DataError
from transferlab.features import FeatureCache, cached_features
from transferlab.heads import make_head
from transferlab.loops import HeadTraining, fit_head


class MeanColour(nn.Module):
    """A stand-in body: mean colour per channel, so features are easy to check by hand."""

    def forward(self, x):
        return x.mean((2, 3))


def test_cache_hit_gives_identical_features(image_folder, tmp_path):
    images = load_dataset(str(image_folder)).train
    cache = FeatureCache(tmp_path / "cache")
    first, hit1 = cached_features(MeanColour(), "m", images, 16, cache)
    second, hit2 = cached_features(MeanColour(), "m", images, 16, cache)
    assert (hit1, hit2) == (False, True)
    assert np.array_equal(first.values, second.values) and first.values.shape == (36, 3)
    red = images.classes.index("red")
    assert first.values[images.labels == red, 0].mean() > first.values[images.labels == red, 2].mean()
    _, hit3 = cached_features(MeanColour(), "m", images, 24, cache)
    _, hit4 = cached_features(MeanColour(), "other-model", images, 16, cache)
    assert not hit3 and not hit4
    assert not list((tmp_path / "cache").glob(".*")), "no staging folders left behind"


def test_corrupt_image_is_skipped_with_named_warning(image_folder, tmp_path, caplog):
    bad = image_folder / "red" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    images = load_dataset(str(image_folder)).train
    with caplog.at_level(logging.WARNING):
        features, _ = cached_features(MeanColour(), "m", images, 16, FeatureCache(tmp_path / "c"))
    assert features.skipped == (str(bad),) and features.valid.sum() == 36
    assert "broken.png" in caplog.text
    with pytest.raises(DataError, match="broken.png"):
        cached_features(MeanColour(), "m", images, 16, None, strict=True)
    with pytest.raises(DataError, match="broken.png"):  # also when the cache holds it as unreadable
        cached_features(MeanColour(), "m", images, 16, FeatureCache(tmp_path / "c"), strict=True)


def test_fit_head_learns_separable_data_and_keeps_best_epoch():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (4, 16))
    y = np.repeat(np.arange(4), 50)
    x = (centres[y] + rng.normal(0, 1, (200, 16))).astype(np.float32)
    head = make_head(16, 4)
    history = fit_head(head, x[::2], y[::2], x[1::2], y[1::2], HeadTraining(epochs=15, lr=1e-2, batch_size=16, min_steps=0))
    assert len(history) == 15 and history[-1]["train_loss"] < history[0]["train_loss"]
    best = min(history, key=lambda r: r["val_loss"])
    with torch.no_grad():
        logits = head(torch.as_tensor(x[1::2]))
    assert nn.functional.cross_entropy(logits, torch.as_tensor(y[1::2])).item() == pytest.approx(best["val_loss"], rel=1e-5)
    assert best["val_accuracy"] > 0.95


def test_fit_head_learns_features_of_tiny_scale_and_takes_enough_steps():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 10)
    x = (rng.normal(0, 3, (4, 64))[y] + rng.normal(0, 1, (40, 64))).astype(np.float32) * 1e-3 + 5  # tiny spread, offset
    head = make_head(64, 4)
    history = fit_head(head, x, y, x, y, HeadTraining(epochs=40, batch_size=32))
    assert len(history) == 250  # 2 steps a pass: 40 epochs raised to 500 steps
    with torch.no_grad():
        assert (head(torch.as_tensor(x)).argmax(1).numpy() == y).mean() == 1.0  # raw features in, folded scale
    assert HeadTraining(epochs=40, batch_size=64).epochs_for(60000) == 40


def test_head_training_validates_settings():
    with pytest.raises(ConfigError, match="epochs"):
        HeadTraining(epochs=0)
    with pytest.raises(ConfigError, match="lr"):
        HeadTraining(lr=0)
