"""Each similarity signal orders constructed cases correctly: matching data vs. noise."""

import numpy as np
import pytest
import torch
from torch import nn

from transferlab import transferability
from transferlab.transferability import BatchNormGap, logme, probe_accuracy


def _informative(n_per_class=60, classes=4, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    centres = rng.normal(0, 2, (classes, dim))
    return (centres[labels] + rng.normal(0, 1, (len(labels), dim))).astype(np.float32), labels


def test_logme_prefers_features_that_carry_the_labels():
    features, labels = _informative()
    noise = np.random.default_rng(1).normal(0, 1, features.shape)
    assert logme(features, labels) > logme(noise, labels) + 0.1
    wide = np.random.default_rng(2).normal(0, 1, (40, 100))  # more dimensions than samples
    assert np.isfinite(logme(wide, np.arange(40) % 4))


def test_probe_accuracy_separates_signal_from_noise():
    features, labels = _informative()
    noise = np.random.default_rng(1).normal(0, 1, features.shape).astype(np.float32)
    assert probe_accuracy(features, labels) > 0.9
    assert probe_accuracy(noise, labels) < 0.5


def test_probe_accuracy_is_the_exact_leave_one_out_accuracy(monkeypatch):
    rng = np.random.default_rng(3)
    labels = np.arange(60) % 4
    features = rng.normal(0, 0.5, (4, 20))[labels] + rng.normal(0, 1, (60, 20))  # overlapping classes
    x = np.hstack([features - features.mean(0), np.ones((60, 1))])
    penalty = 0.1 * np.mean(np.linalg.svd(x, compute_uv=False) ** 2)
    hits = 0
    for i in range(60):  # refit without sample i, then score it
        rest = np.arange(60) != i
        weights = np.linalg.solve(x[rest].T @ x[rest] + penalty * np.eye(21), x[rest].T @ np.eye(4)[labels[rest]])
        hits += int((x[i] @ weights).argmax() == labels[i])
    monkeypatch.setattr(transferability, "RIDGE_PENALTIES", (0.1,))
    assert 0.5 < hits / 60 < 1
    assert probe_accuracy(features, labels) == hits / 60


def test_weighted_ridge_leave_one_out_counts_each_image_by_its_class_weight(monkeypatch):
    """With class weights each image's squared error weighs its class's weight, and the exact
    leave-one-out accuracy counts each image by it (balanced accuracy for balanced weights), as
    refitting without each image shows; its leave-one-out scores are that refit's scores."""
    rng = np.random.default_rng(4)
    labels = np.array([0] * 40 + [1] * 12 + [2] * 8)
    features = rng.normal(0, 0.6, (3, 10))[labels] + rng.normal(0, 1, (60, 10))
    weight = 60 / (3 * np.bincount(labels))
    root = np.sqrt(weight[labels])[:, None]
    mean = weight[labels] @ features / weight[labels].sum()
    x = np.hstack([features - mean, np.ones((60, 1))])
    penalty = 0.1 * np.mean(np.linalg.svd(x * root, compute_uv=False) ** 2)
    recalls, refit_scores = np.zeros(3), np.zeros((60, 3))
    for i in range(60):
        rest = np.arange(60) != i
        scaled, target = x[rest] * root[rest], np.eye(3)[labels[rest]] * root[rest]
        coefficients = np.linalg.solve(scaled.T @ scaled + penalty * np.eye(11), scaled.T @ target)
        refit_scores[i] = x[i] @ coefficients
        recalls[labels[i]] += int(refit_scores[i].argmax() == labels[i]) / np.sum(labels == labels[i])
    monkeypatch.setattr(transferability, "CLASSIFIER_PENALTIES", (0.1,))
    weighted = transferability.ridge_classifier(features, labels, 3, weight)
    assert weighted.loo_accuracy == pytest.approx(recalls.mean())
    assert np.allclose(weighted.loo_scores, refit_scores)
    unweighted = transferability.ridge_classifier(features, labels, 3)
    monkeypatch.setattr(transferability, "RIDGE_PENALTIES", (0.1,))
    assert unweighted.loo_accuracy == probe_accuracy(features, labels)  # no weights: plain accuracy, as before
    same = transferability.ridge_classifier(features, labels, 3, np.ones(3))
    assert np.allclose(same.weights, unweighted.weights) and np.allclose(same.bias, unweighted.bias)


def test_the_ridge_classifier_takes_the_penalty_of_least_leave_one_out_squared_error(monkeypatch):
    """Of its penalties, the classifier takes the one whose refits without each image miss that
    image's one-hot target by the least squared error (scikit-learn's RidgeCV criterion); on
    overlapping classes neither the weakest nor the strongest."""
    rng = np.random.default_rng(6)
    labels = np.arange(45) % 3
    features = rng.normal(0, 0.5, (3, 30))[labels] + rng.normal(0, 1, (45, 30))
    x = np.hstack([features - features.mean(0), np.ones((45, 1))])
    penalties = (1e-3, 1e-1, 1.0, 100.0)
    scale = np.mean(np.linalg.svd(x, compute_uv=False) ** 2)
    errors = []
    for penalty in penalties:
        error = 0.0
        for i in range(45):
            rest = np.arange(45) != i
            coefficients = np.linalg.solve(x[rest].T @ x[rest] + penalty * scale * np.eye(31), x[rest].T @ np.eye(3)[labels[rest]])
            error += np.sum((x[i] @ coefficients - np.eye(3)[labels[i]]) ** 2) / 45
        errors.append(error)
    monkeypatch.setattr(transferability, "CLASSIFIER_PENALTIES", penalties)
    ridge = transferability.ridge_classifier(features, labels, 3)
    assert ridge.penalty == penalties[int(np.argmin(errors))] and ridge.penalty not in (penalties[0], penalties[-1])


def test_balanced_weights_lift_the_rare_class_of_a_ridge_classifier():
    """90 images of one class and 10 of another, overlapping: the plain ridge classifier answers the
    rare class for 40% of its images; with balanced weights, balanced accuracy on a balanced test
    sample comes near the Bayes rule's (0.87: the classes' means 2.26 standard deviations apart)."""
    rng = np.random.default_rng(5)

    def sample(counts):
        labels = np.repeat([0, 1], counts)
        return rng.normal(0, 1, (len(labels), 8)) + 0.8 * labels[:, None], labels

    train_x, train_y = sample([90, 10])
    test_x, test_y = sample([500, 500])

    def balanced_accuracy(class_weights):
        ridge = transferability.ridge_classifier(train_x, train_y, 2, class_weights)
        predicted = (test_x @ ridge.weights + ridge.bias).argmax(1)
        return np.mean([np.mean(predicted[test_y == c] == c) for c in (0, 1)])

    plain, balanced = balanced_accuracy(None), balanced_accuracy(100 / (2 * np.array([90, 10])))
    assert plain < 0.75 and balanced > max(plain + 0.1, 0.8)


def test_batchnorm_gap_is_small_on_the_source_distribution_and_large_on_noise():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8, momentum=None), nn.ReLU(), nn.Conv2d(8, 8, 3),
                        nn.BatchNorm2d(8, momentum=None))  # fmt: skip
    source = torch.rand(256, 3, 12, 12) * torch.tensor([1.0, 0.2, 0.5]).view(1, 3, 1, 1)
    net.train()
    with torch.no_grad():
        for batch in source.split(32):  # momentum=None: running stats = exact averages over the source
            net(batch)
    net.eval()

    def gap(data):
        with BatchNormGap(net) as probe, torch.no_grad():
            for batch in data.split(64):
                net(batch)
        return probe.gaps()

    same = gap(torch.rand(256, 3, 12, 12) * torch.tensor([1.0, 0.2, 0.5]).view(1, 3, 1, 1))
    other = gap(torch.randn(256, 3, 12, 12) * 3 + 2)
    assert set(same) == {"1", "4"}
    assert all(same[k] < 0.05 for k in same) and all(other[k] > 1.0 for k in other)


def test_leep_by_hand_and_on_informative_against_uninformative_predictions():
    from transferlab.transferability import leep

    # two images, two source classes, two target classes: the source is certain and right
    assert leep(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])) == pytest.approx(0.0)
    # a source that says the same for everyone predicts the label prior: log(1/2)
    assert leep(np.full((4, 3), 1 / 3), np.array([0, 1, 0, 1])) == pytest.approx(np.log(0.5))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    informative = np.eye(5)[labels] * 0.8 + 0.04  # the source's class follows the target's
    noise = rng.dirichlet(np.ones(5), 300)
    assert leep(informative, labels) > leep(noise, labels)


def test_the_mirror_test_finds_the_labels_a_mirror_changes_and_keeps_the_others():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 30)
    noise = rng.normal(0, 1, (60, 8))
    # left- and right-pointing: each class lights one half of the features, the mirror swaps the halves
    pointing = noise + 2.0 * np.hstack([np.repeat((labels == 0)[:, None], 4, 1), np.repeat((labels == 1)[:, None], 4, 1)])
    mirrored = np.hstack([pointing[:, 4:], pointing[:, :4]])
    chiral = transferability.mirror_test(pointing, mirrored, labels, 2)
    assert chiral.accuracy > 0.9 and chiral.mirrored_accuracy < 0.1 and chiral.changes_labels
    kept = transferability.mirror_test(pointing, pointing + rng.normal(0, 0.05, pointing.shape), labels, 2)
    assert abs(kept.accuracy - kept.mirrored_accuracy) < 0.05 and not kept.changes_labels
    assert kept.standard_error >= 1 / 60  # at least one image's share: a difference of none is no certainty
    assert transferability.mirror_test(pointing, mirrored, labels, 2) == chiral  # seeded folds
