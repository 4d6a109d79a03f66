"""Which unlabelled images to label next (``transferlab suggest``): uncertain ones, spread out.

* ``margin`` - the smallest gap between the two most probable classes first (uncertainty alone;
  Scheffer, Decomain, Wrobel 2001);
* ``kcenter`` - greedy k-centre over the frozen features among the most uncertain quarter
  (diversity on top of uncertainty; Sener and Savarese, "Active Learning for Convolutional Neural
  Networks: A Core-Set Approach", ICLR 2018);
* ``badge`` - k-means++ seeding over the gradient the head's loss would have on each image if its
  predicted class were right, ``(p - onehot(argmax p)) (x) features`` (Ash et al., "Deep Batch
  Active Learning by Diverse, Uncertain Gradient Lower Bounds", ICLR 2020): large gradients are
  uncertain images, distances between them keep the batch diverse;
* ``random`` - the baseline.

Each returns the chosen rows best first. Torch-free (NumPy).
"""

from __future__ import annotations

import numpy as np

SELECTIONS = ("badge", "kcenter", "margin", "random")
SELECTION = "kcenter"  # what suggest runs: benchmarks/suggest.py measured it best of the four (docs/unlabeled.md)
CANDIDATE_SHARE = 4  # kcenter picks among the n x this most uncertain images


def margins(probabilities: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability of each row (0: a coin toss between two classes)."""
    top2 = np.sort(probabilities, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _by_margin(probabilities: np.ndarray, n: int) -> np.ndarray:
    return np.argsort(margins(probabilities), kind="stable")[:n]


def _k_centre(features: np.ndarray, probabilities: np.ndarray, n: int) -> np.ndarray:
    """Greedy k-centre among the ``n * CANDIDATE_SHARE`` most uncertain rows, starting at the most uncertain."""
    candidates = _by_margin(probabilities, n * CANDIDATE_SHARE)
    x = np.asarray(features, dtype=np.float64)[candidates]
    chosen = [0]
    distance = np.square(x - x[0]).sum(1)
    while len(chosen) < min(n, len(candidates)):
        far = int(np.argmax(distance))
        chosen.append(far)
        distance = np.minimum(distance, np.square(x - x[far]).sum(1))
    return candidates[np.asarray(chosen)]


def _badge(features: np.ndarray, probabilities: np.ndarray, n: int, seed: int) -> np.ndarray:
    """k-means++ seeding on the gradient embeddings, never building them: for g_i = r_i (x) x_i,
    |g_i - g_j|^2 = |r_i|^2 |x_i|^2 + |r_j|^2 |x_j|^2 - 2 (r_i . r_j)(x_i . x_j)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(features, dtype=np.float64)
    residual = np.asarray(probabilities, dtype=np.float64).copy()
    residual[np.arange(len(residual)), residual.argmax(1)] -= 1.0
    norms = np.square(residual).sum(1) * np.square(x).sum(1)
    first = int(np.argmax(norms))  # the largest gradient first, as BADGE does
    chosen = [first]
    distance = np.full(len(x), np.inf)
    while len(chosen) < min(n, len(x)):
        last = chosen[-1]
        to_last = norms + norms[last] - 2.0 * (residual @ residual[last]) * (x @ x[last])
        distance = np.minimum(distance, np.maximum(to_last, 0.0))
        distance[chosen] = 0.0
        if distance.sum() <= 0:
            break
        chosen.append(int(rng.choice(len(x), p=distance / distance.sum())))
    return np.asarray(chosen)


def select(features: np.ndarray, probabilities: np.ndarray, n: int, method: str = SELECTION, seed: int = 0) -> np.ndarray:
    """The ``n`` rows (of the frozen ``features`` and the head's ``probabilities``) to label first, by ``method``."""
    if method == "margin":
        return _by_margin(probabilities, n)
    if method == "kcenter":
        return _k_centre(features, probabilities, n)
    if method == "badge":
        return _badge(features, probabilities, n, seed)
    if method == "random":
        return np.random.default_rng(seed).permutation(len(features))[:n]
    raise ValueError(f"unknown selection {method!r}")
