"""Transferability signals: how well a frozen network's features at one depth suit a target task.

* ``logme`` - LogME, the log marginal evidence of a Bayesian linear model on the features
  (You, Liu, Wang, Long: "LogME: Practical Assessment of Pre-trained Models for Transfer
  Learning", ICML 2021). Higher is better; no training, no hyperparameters.
* ``probe_accuracy`` - a linear probe trained on part of the features and scored on the rest
  (the standard protocol of Kornblith, Shlens, Le: "Do Better ImageNet Models Transfer
  Better?", CVPR 2019).
* ``batchnorm_gap`` - the distance between the target's activation statistics and the running
  statistics a BatchNorm layer carries from the source data (the observation behind AdaBN: Li,
  Wang, Shi, Liu, Hou: "Revisiting Batch Normalization For Practical Domain Adaptation", 2016).
  0 for the source's own distribution, larger the further the target is.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .heads import make_head
from .loops import HeadTraining, evaluate_logits, fit_head


def logme(features: np.ndarray, labels: np.ndarray, iterations: int = 11) -> float:
    """LogME evidence per sample, averaged over one-vs-rest targets of each class."""
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    s2 = s**2
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


def probe_accuracy(features: np.ndarray, labels: np.ndarray, seed: int = 0, held_out: float = 0.3) -> float:
    """Accuracy of a linear head on standardized features, trained on 70% and scored on 30% (stratified)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for k in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == k))
        test[members[: max(1, round(len(members) * held_out))]] = True
    mean, std = features[~test].mean(0), features[~test].std(0) + 1e-6
    x = ((features - mean) / std).astype(np.float32)
    remap = {k: i for i, k in enumerate(np.unique(labels))}
    y = np.asarray([remap[k] for k in labels])
    torch.manual_seed(seed)
    head = make_head(x.shape[1], len(remap))
    fit_head(head, x[~test], y[~test], x[test], y[test], HeadTraining(epochs=50, lr=3e-3, batch_size=32, seed=seed))
    with torch.no_grad():
        return evaluate_logits(head(torch.as_tensor(x[test])), torch.as_tensor(y[test]))[1]


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
