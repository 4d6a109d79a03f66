"""A benchmark cell on frozen features, shared by benchmarks/unlabeled.py and benchmarks/suggest.py:
the labelled subsample as `transferlab train --strategy head --resolution 64 --samples-per-class N
--test-per-class 100 --seed S` draws it, and images of the same training pool with their labels
hidden (never the test split, which is not in the pool); the final features of all of them
(cached), and the head's training and scoring."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HIDDEN_PER_CLASS = 100
FLAGS = "--strategy head --resolution 64 --test-per-class 100 --samples-per-class N --seed S"


@dataclass
class FrozenCell:
    prepared: object
    config: object
    features: dict  # split name -> (features, labels); "unlabeled" labels are NO_LABEL
    truth: np.ndarray  # the hidden labels of the unlabelled rows
    seed: int

    @property
    def classes(self) -> int:
        return len(self.prepared.classes)

    def new_head(self):
        import torch

        from transferlab.trainer.train import build_model

        torch.manual_seed(self.seed)
        return build_model(self.prepared, self.config)[0].head

    def fit(self, head, x, y, fit_val: bool = False) -> list[dict]:
        """``head`` fitted on ``x``, ``y`` as the ``head`` stage fits it (closed form, one tap; with
        ``fit_val`` the validation images fitted too, as a run without unlabelled images does)."""
        from transferlab.trainer.frozen import head_fitter

        val_x, val_y = self.features["val"]
        return head_fitter(val_x, val_y, self.config.resolved_class_weight, None, [np.shape(x)[1]], fit_val)[0](head, x, y)

    def embed(self):
        """How the head stage's pseudo-labels see the features: each standardized over the labelled
        and unlabelled images (``frozen._graph_features``)."""
        from transferlab.trainer.frozen import _graph_features

        train_x, unlabeled_x = self.features["train"][0], self.features["unlabeled"][0]
        return _graph_features(train_x, unlabeled_x, [np.shape(train_x)[1]])

    def scored(self, head) -> float:
        """Test balanced accuracy of ``head``."""
        import torch

        from transferlab.metrics import classification_metrics

        test_x, test_y = self.features["test"]
        head.eval()
        with torch.no_grad():
            predicted = head(torch.from_numpy(np.asarray(test_x))).argmax(1).numpy()
        return classification_metrics(test_y, predicted, self.prepared.classes)["balanced_accuracy"]


def frozen_cell(data: str, size: int, seed: int, cache_dir: str | None) -> FrozenCell:
    from torch import nn

    from transferlab.config import TrainConfig
    from transferlab.datasets import load_dataset
    from transferlab.features import cached_features
    from transferlab.prepare import prepare
    from transferlab.trainer.train import build_model
    from transferlab.unlabeled import hidden_labels

    config = TrainConfig(data=data, strategy="head", resolution=64, test_per_class=100, samples_per_class=size, seed=seed,
                         cache_dir=cache_dir)  # fmt: skip
    prepared = prepare(config)
    pool = load_dataset(data).train
    hidden = hidden_labels(pool, prepared.splits, HIDDEN_PER_CLASS, seed)
    order = np.argsort(pool.indices)
    truth = pool.labels[order[np.searchsorted(pool.indices[order], hidden.indices)]]
    model, cut = build_model(prepared, config)
    extractor = nn.Sequential(model.normalize, model.body)
    parts = {"weights": prepared.weights_digest, "cut": cut, "benchmark": "unlabeled"}
    features = {}
    for name, images in (("train", prepared.splits.train), ("val", prepared.splits.val), ("test", prepared.splits.test),
                         ("unlabeled", hidden)):  # fmt: skip
        values, _ = cached_features(extractor, parts, images, 64, prepared.cache, desc=name)
        features[name] = values.readable(images.labels)
    return FrozenCell(prepared, config, features, truth, seed)  # built-in images are all readable: rows align
