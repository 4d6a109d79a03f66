"""Transferability signals: how well a frozen network's features at one depth suit a target task.

* ``logme`` - LogME, the log marginal evidence of a Bayesian linear model on the features
  (You, Liu, Wang, Long: "LogME: Practical Assessment of Pre-trained Models for Transfer
  Learning", ICML 2021). Higher is better; no training, no hyperparameters.
* ``probe_accuracy`` - a linear probe's accuracy on samples it was not fitted on (the linear
  evaluation protocol of Kornblith, Shlens, Le: "Do Better ImageNet Models Transfer Better?",
  CVPR 2019), here a ridge classifier scored by exact leave-one-out.
* ``leep`` - the Log Expected Empirical Prediction (Nguyen, Hassner, Seeger, Archambeau: "LEEP: A
  New Measure to Evaluate Transferability of Learned Representations", ICML 2020): how well the
  source classifier's predictions, mapped to the target labels through their empirical joint
  distribution, predict the target. Needs the source's own classifier; higher is better.
* ``mirror_test`` - whether mirroring an image left to right changes what it shows (arrows, text,
  left- and right-handed parts): a probe fitted on the images as they are, scored on held-out
  images as they are and mirrored. Where the mirrored ones score clearly worse, training must not
  flip images.
* ``batchnorm_gap`` - the distance between the target's activation statistics and the running
  statistics a BatchNorm layer carries from the source data (the observation behind AdaBN: Li,
  Wang, Shi, Liu, Hou: "Revisiting Batch Normalization For Practical Domain Adaptation", 2016).
  0 for the source's own distribution, larger the further the target is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from torch import nn


def left_singular(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(left singular vectors, squared singular values) of ``x``, the non-zero ones, from the
    eigendecomposition of the smaller Gram matrix: on a few hundred samples of a thousand
    features, many times faster than an SVD."""
    n, d = x.shape
    if n <= d:
        s2, u = np.linalg.eigh(x @ x.T)
    else:
        s2, v = np.linalg.eigh(x.T @ x)
        u = x @ v / np.sqrt(np.maximum(s2, 1e-300))
    keep = s2 > s2.max() * 1e-10
    return u[:, keep], s2[keep]


def logme(features: np.ndarray, labels: np.ndarray, iterations: int = 11) -> float:
    """LogME evidence per sample, averaged over one-vs-rest targets of each class."""
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    u, s2 = left_singular(f)
    evidences = []
    for k in np.unique(labels):
        y = (labels == k).astype(np.float64)
        x2 = (u.T @ y) ** 2
        residual_outside = max(float(y @ y - x2.sum()), 0.0)  # the part of y outside the features' span
        alpha, beta = 1.0, 1.0
        for _ in range(iterations):
            t = alpha / beta
            gamma = float((s2 / (s2 + t)).sum())
            m2 = float((s2 * x2 / (s2 + t) ** 2).sum())
            res2 = float((x2 / (1 + s2 / t) ** 2).sum()) + residual_outside
            alpha, beta = gamma / (m2 + 1e-5), (n - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - t) / t < 0.01:
                break
        t = alpha / beta
        m2 = float((s2 * x2 / (s2 + t) ** 2).sum())
        res2 = float((x2 / (1 + s2 / t) ** 2).sum()) + residual_outside
        evidence = (
            d / 2 * math.log(alpha) + n / 2 * math.log(beta)
            - 0.5 * float(np.log(alpha + beta * s2).sum()) - 0.5 * (d - len(s2)) * math.log(alpha)
            - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * math.log(2 * math.pi)
        )  # fmt: skip
        evidences.append(evidence / n)
    return float(np.mean(evidences))


RIDGE_PENALTIES = (1e-3, 1e-2, 1e-1, 1.0, 10.0)  # times the mean squared singular value: the probe's
# The classifier's: the same range four steps a decade, chosen by the leave-one-out squared error (scikit-learn's
# RidgeCV criterion), which moves smoothly with the penalty where the accuracy of a few hundred images jumps
# (measured on 42 colour folders: benchmarks/folder_defaults.py, docs/strategies.md).
CLASSIFIER_PENALTIES = tuple(float(10.0**e) for e in np.arange(-3, 1.01, 0.25))


def _ridge_leave_one_out(features: np.ndarray, target: np.ndarray, image_weights: np.ndarray | None,
                         penalties: tuple[float, ...]):  # fmt: skip
    """The ridge regression of the one-hot ``target`` on the centred ``features`` (with an
    intercept) at each of ``penalties``, each image's squared error weighted by ``image_weights``
    (None: 1; the rows scaled by their square roots, the centring weighted): its exact
    leave-one-out accuracy and squared error, each image counted by its weight, from one
    eigendecomposition; and, at the penalty of least squared error, each image's scores from the
    regression fitted without it (kept for that penalty only: images x classes apiece). Returns
    (accuracies, squared errors, those leave-one-out scores, the scaled centred design, its mean,
    u, s2, u^T of the scaled target, the penalties' scale)."""
    x = np.asarray(features, dtype=np.float64)
    weights = np.ones(len(x)) if image_weights is None else np.asarray(image_weights, dtype=np.float64)
    root = np.sqrt(weights)[:, None]
    mean = weights @ x / weights.sum()
    design = np.hstack([x - mean, np.ones((len(x), 1))]) * root  # the intercept; the penalty scales with the features
    truth = target.argmax(1)
    u, s2 = left_singular(design)
    projected = u.T @ (target * root)
    scale = np.sum(s2) / min(design.shape)
    accuracies, errors, scores = [], [], None
    for penalty in penalties:
        shrink = s2 / (s2 + penalty * scale)
        fitted = u @ (shrink[:, None] * projected) / root
        hat = np.einsum("ij,j,ij->i", u, shrink, u)
        left_out = (fitted - hat[:, None] * target) / np.maximum(1 - hat, 1e-9)[:, None]
        accuracies.append(float(weights @ (left_out.argmax(1) == truth) / weights.sum()))
        errors.append(float(weights @ ((left_out - target) ** 2).sum(1) / weights.sum()))
        if errors[-1] < min(errors[:-1], default=np.inf):  # the first of equal errors, as np.argmin picks
            scores = left_out
    return accuracies, errors, scores, design, mean, u, s2, projected, scale


def _ridge_weights(design: np.ndarray, mean: np.ndarray, u: np.ndarray, s2: np.ndarray, projected: np.ndarray,
                   penalty: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The (weights, bias) of :func:`_ridge_leave_one_out`'s regression at ``penalty`` (already
    times the penalties' scale), fitted on every image, for features that are not centred."""
    coefficients = design.T @ (u @ ((1 / (s2 + penalty))[:, None] * projected))
    return coefficients[:-1], coefficients[-1] - mean @ coefficients[:-1]


def probe_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Exact leave-one-out accuracy of a linear ridge-regression classifier on centred features.

    One-hot targets, the best of ``RIDGE_PENALTIES``. Every sample is scored by a probe fitted
    without it, in closed form from one eigendecomposition: the leave-one-out prediction of sample i is
    ``(f_i - h_i y_i) / (1 - h_i)`` with ``f`` the fitted values and ``h`` the hat matrix's diagonal
    (Rifkin and Lippert, "Notes on Regularized Least Squares", MIT 2007). Deterministic, and on a
    small sample far less noisy than one held-out split.
    """
    classes, target = np.unique(labels, return_inverse=True)
    return max(_ridge_leave_one_out(features, np.eye(len(classes))[target], None, RIDGE_PENALTIES)[0])


def probe_correct(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Whether :func:`probe_accuracy`'s probe, fitted without each image, classifies it right (at the
    penalty of least leave-one-out squared error): per image, so two sets of features of the same
    images can be compared image by image."""
    classes, target = np.unique(labels, return_inverse=True)
    scores = _ridge_leave_one_out(features, np.eye(len(classes))[target], None, RIDGE_PENALTIES)[2]
    return scores.argmax(1) == target


@dataclass(frozen=True)
class RidgeClassifier:
    """A fitted ridge classifier: ``features @ weights + bias`` scores each class; its penalty, its
    leave-one-out accuracy, and the scores of each fitted image by the classifier fitted without it."""

    weights: np.ndarray  # features x classes
    bias: np.ndarray  # classes
    penalty: float
    loo_accuracy: float
    loo_scores: np.ndarray  # fitted images x classes


def ridge_classifier(features: np.ndarray, labels: np.ndarray, classes: int,
                     class_weights: np.ndarray | None = None) -> RidgeClassifier:  # fmt: skip
    """A ridge classifier as :func:`probe_accuracy`'s, fitted on every row: one-hot targets over
    ``classes``, at the penalty of :data:`CLASSIFIER_PENALTIES` of least leave-one-out squared error. With
    ``class_weights`` (per class) each image's squared error weighs its class's weight (weighted
    least squares, scikit-learn's ``class_weight``) and the leave-one-out accuracy counts each image
    by it: balanced weights (1 / (classes x the class's share)) make it balanced accuracy, and the
    scores estimate the class posteriors of a balanced sample."""
    image_weights = None if class_weights is None else np.asarray(class_weights, dtype=np.float64)[labels]
    accuracies, errors, scores, design, mean, u, s2, projected, scale = _ridge_leave_one_out(
        features, np.eye(classes)[labels], image_weights, CLASSIFIER_PENALTIES)
    best = int(np.argmin(errors))
    weights, bias = _ridge_weights(design, mean, u, s2, projected, CLASSIFIER_PENALTIES[best] * scale)
    return RidgeClassifier(weights, bias, CLASSIFIER_PENALTIES[best], accuracies[best], scores)


MIRROR_FOLDS = 5  # the mirror test's stratified folds
# How far below the images as they are their mirror images must score to change labels: clearly, as the check's
# race counts it (3 standard errors). Both errors cost: mirroring where it changes the class cost a network 19 points
# (orientation), withholding flips where it does not cost one 3.2 (emoji-apple: crops alone; docs/strategies.md).
MIRROR_STANDARD_ERRORS = 3.0


@dataclass(frozen=True)
class MirrorTest:
    """A probe's accuracy on held-out images as they are and mirrored left to right, and the
    standard error of the per-image difference (at least one image's share)."""

    accuracy: float
    mirrored_accuracy: float
    standard_error: float

    @property
    def changes_labels(self) -> bool:
        """Whether the mirror images score below the images as they are by more than
        :data:`MIRROR_STANDARD_ERRORS` standard errors: mirroring changes what they show."""
        return bool(self.accuracy - self.mirrored_accuracy > MIRROR_STANDARD_ERRORS * self.standard_error)

    def to_json(self) -> dict:
        return {"accuracy": self.accuracy, "mirrored_accuracy": self.mirrored_accuracy,
                "standard_error": self.standard_error, "changes_labels": self.changes_labels}  # fmt: skip


def mirror_test(features: np.ndarray, mirrored: np.ndarray, labels: np.ndarray, classes: int,
                seed: int = 0) -> MirrorTest:  # fmt: skip
    """:class:`MirrorTest` of the images whose features are ``features`` (``mirrored``: their mirror
    images', row by row): in :data:`MIRROR_FOLDS` stratified folds, a :func:`ridge_classifier`
    fitted on the other folds' images as they are scores each fold's images and their mirror images.
    Features that hardly change under a mirror (most photographs, pooled) score alike."""
    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    fold = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):  # each class dealt over the folds in a seeded order
        members = order[labels[order] == label]
        fold[members] = np.arange(len(members)) % MIRROR_FOLDS
    right = np.zeros((2, len(labels)))
    for k in range(MIRROR_FOLDS):
        held = fold == k
        if held.any() and not held.all():
            probe = ridge_classifier(features[~held], labels[~held], classes)
            for row, x in enumerate((features, mirrored)):
                right[row, held] = (x[held] @ probe.weights + probe.bias).argmax(1) == labels[held]
    difference = right[0] - right[1]
    spread = difference.std(ddof=1) / math.sqrt(len(labels)) if len(labels) > 1 else 0.0
    return MirrorTest(float(right[0].mean()), float(right[1].mean()), float(max(spread, 1 / max(len(labels), 1))))


def tap_standardization(features: np.ndarray, widths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per feature (float32), the mean and a scale that standardize it and divide its tap's block by
    sqrt(width): every tap weighs the same in a head over several cuts however wide it is
    (Head2Toe's recipe). A feature that varies less than its tap's average is scaled as if it
    varied that much: near constant features are not blown up (a floor of a tenth of it left 8e-5
    between the logits of PyTorch and of the ONNX export, near the 1e-4 parity check; this floor,
    1e-5)."""
    values = np.asarray(features, dtype=np.float32)
    mean, scales = values.mean(0), []
    for block in np.split(values, np.cumsum(widths)[:-1], axis=1):
        std = block.std(0, ddof=1)
        scales.append(np.maximum(std, float(std.mean()) + 1e-12) * np.float32(len(std) ** 0.5))
    return mean, np.concatenate(scales).astype(np.float32)


def multicut_probe_accuracy(blocks: list[np.ndarray], labels: np.ndarray) -> float:
    """:func:`probe_accuracy` on the features of every cut at once, each tap standardized and
    weighed as the ``multicut`` head sees them (:func:`tap_standardization`)."""
    features = np.hstack(blocks)
    mean, scale = tap_standardization(features, [b.shape[1] for b in blocks])
    return probe_accuracy((features - mean) / scale, labels)


def leep(source_probabilities: np.ndarray, labels: np.ndarray) -> float:
    """LEEP of ``source_probabilities`` (N x Z: the source classifier's softmax on each target image)
    for the target ``labels``: the mean log-likelihood of the "expected empirical predictor"
    ``p(y | x) = sum_z p(y | z) p(z | x)``, with ``p(y | z)`` from the empirical joint of target
    labels and source predictions."""
    theta = np.asarray(source_probabilities, dtype=np.float64)
    classes, target = np.unique(labels, return_inverse=True)
    joint = np.zeros((theta.shape[1], len(classes)))
    np.add.at(joint.T, target, theta)  # joint[z, y] = sum of p(z | x) over the images labelled y
    joint /= len(theta)
    conditional = joint / np.maximum(joint.sum(1, keepdims=True), 1e-300)  # p(y | z)
    expected = theta @ conditional  # N x Y
    return float(np.mean(np.log(np.maximum(expected[np.arange(len(theta)), target], 1e-300))))


VARIANCE_FLOOR = 1e-3


class BatchNormGap:
    """Accumulates, per BatchNorm layer, the statistics of its input on the target data.

    Use as a context manager around forward passes of ``model`` in eval mode; ``gaps()`` then
    gives, per layer name, the median over channels of the symmetric KL divergence between the
    Gaussians N(target mean, target var) and N(running mean, running var). The median, and a
    variance floor of 1e-3, keep channels that are dead on the source (running var near 0) from
    dominating.
    """

    def __init__(self, model: nn.Module):
        self.layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
        self.sums: dict[str, list] = {}
        self.hooks = []

    def _hook(self, name: str):
        def record(_module, inputs, _output):
            x = inputs[0].detach().double().transpose(0, 1).reshape(inputs[0].shape[1], -1)
            stats = self.sums.setdefault(name, [0, 0.0, 0.0])
            stats[0] += x.shape[1]
            stats[1] = stats[1] + x.sum(1)
            stats[2] = stats[2] + (x * x).sum(1)

        return record

    def __enter__(self) -> BatchNormGap:
        self.hooks = [m.register_forward_hook(self._hook(n)) for n, m in self.layers.items()]
        return self

    def __exit__(self, *exc) -> None:
        for hook in self.hooks:
            hook.remove()

    def gaps(self) -> dict[str, float]:
        result = {}
        for name, (count, total, squares) in self.sums.items():
            layer = self.layers[name]
            mean_t = total / count
            var_t = (squares / count - mean_t**2).clamp_min(VARIANCE_FLOOR)
            mean_s, var_s = layer.running_mean.double(), layer.running_var.double().clamp_min(VARIANCE_FLOOR)
            shift = (mean_t - mean_s) ** 2
            kl = 0.5 * ((var_t + shift) / var_s + (var_s + shift) / var_t) - 1.0
            result[name] = float(kl.median())
        return result
