"""The candidates' combination, fitted on their out-of-fold predictions and hedged against their noise.

Each candidate's temperature is fitted on its out-of-fold logits (every labelled image, never a
handful of validation images); member weights come from greedy ensemble selection with
replacement on the tempered probabilities, minimizing log loss (Caruana et al., "Ensemble
selection from libraries of models", ICML 2004); a member below :data:`MIN_WEIGHT` is dropped. The selection replaces the equal-weight
reference (today's ``ensemble``) only where a paired bootstrap over the labelled images says its
log loss is lower with :data:`CONFIDENCE` (and by at least :data:`MIN_GAIN`); and the best single candidate replaces whatever was
chosen where the bootstrap says it is more accurate with the same confidence. So a member can
reach weight 0 when it is clearly worse, and noise alone moves nothing.

Under class weights (``--class-weight balanced``) every image's loss and correctness count by its
class's weight, as in training: the temperatures, the selection and the accuracies are then those
of a balanced sample (accuracy becomes balanced accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..ensemble import fit_temperature

SELECTION_ROUNDS = 20  # greedy steps: weights are multiples of 1/20
BOOTSTRAP_DRAWS = 2000
CONFIDENCE = 0.9  # the share of bootstrap draws that must favour a departure from the reference
MIN_WEIGHT = 0.15  # a member below it is dropped: it would cost a whole training and network for a trace of gain
MIN_GAIN = 0.001  # nats of log loss per image: a departure gaining less is no departure, however consistent
#                  (candidates that are all perfect differ by far less, and in every bootstrap draw)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def mixture(log_probabilities: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """The log of the weighted average of the candidates' probabilities (weights summing to 1)."""
    used = [(log_probabilities[name], weight) for name, weight in weights.items() if weight > 0]
    stacked = np.stack([lp + np.log(weight) for lp, weight in used])
    top = stacked.max(0)
    return top + np.log(np.exp(stacked - top).sum(0))


def normalized(weights: dict[str, float]) -> dict[str, float]:
    """``weights`` summing to 1; equal weights where they are all 0."""
    total = sum(weights.values())
    return {name: (w / total if total > 0 else 1 / len(weights)) for name, w in weights.items()}


def image_losses(log_probabilities: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Each image's cross-entropy, times its weight (``weights``: per image, mean 1; default 1)."""
    losses = -log_probabilities[np.arange(len(labels)), labels]
    return losses if weights is None else losses * weights


def image_weights(labels: np.ndarray, class_weights: np.ndarray | None) -> np.ndarray:
    """Per image its class's weight, scaled to a mean of 1 (all 1 without ``class_weights``)."""
    if class_weights is None:
        return np.ones(len(labels))
    weights = np.asarray(class_weights, dtype=np.float64)[labels]
    return weights / weights.mean()


def greedy_selection(log_probabilities: dict[str, np.ndarray], labels: np.ndarray, rounds: int = SELECTION_ROUNDS,
                     weights: np.ndarray | None = None) -> dict[str, float]:  # fmt: skip
    """Ensemble selection with replacement: each round adds the candidate whose addition gives the
    least log loss (``weights``: per image; ties: the earlier candidate); the weights returned are
    the counts over ``rounds``."""
    counts = dict.fromkeys(log_probabilities, 0)

    def loss_with(name: str) -> float:
        total = sum(counts.values()) + 1
        trial = {n: (c + (n == name)) / total for n, c in counts.items()}
        return float(image_losses(mixture(log_probabilities, trial), labels, weights).mean())

    for _ in range(rounds):
        counts[min(counts, key=loss_with)] += 1
    return {name: count / rounds for name, count in counts.items()}


def bootstrap_share(better: np.ndarray, seed: int = 0, draws: int = BOOTSTRAP_DRAWS) -> float:
    """The share of bootstrap resamples of the images over which ``better`` (per image: how much one
    choice gains over another) sums to more than zero: a paired bootstrap."""
    rng = np.random.default_rng(seed)
    resamples = rng.integers(0, len(better), (draws, len(better)))
    return float((better[resamples].mean(1) > 0).mean())


def bootstrap_interval(values: np.ndarray, seed: int = 0, draws: int = BOOTSTRAP_DRAWS) -> tuple[float, float]:
    """The 90% bootstrap interval of ``values``'s mean."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (draws, len(values)))].mean(1)
    return float(np.quantile(means, 0.05)), float(np.quantile(means, 0.95))


@dataclass(frozen=True)
class Combination:
    """The weights and temperatures chosen, why, and the out-of-fold figures behind them."""

    weights: dict[str, float]  # by candidate; 0: not trained
    temperatures: dict[str, float]
    reason: str
    scores: dict[str, dict]  # by candidate and "combination": accuracy, its interval, log loss

    @property
    def members(self) -> list[str]:
        return [name for name, weight in self.weights.items() if weight > 0]


def _score(log_probabilities: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> dict:
    correct = (log_probabilities.argmax(1) == labels) * weights
    low, high = bootstrap_interval(correct)
    return {"accuracy": float(correct.mean()), "interval": [low, high],
            "log_loss": float(image_losses(log_probabilities, labels, weights).mean())}  # fmt: skip


def combine(logits: dict[str, np.ndarray], labels: np.ndarray, reference: dict[str, float],
            class_weights: np.ndarray | None = None) -> Combination:  # fmt: skip
    """The combination of the candidates whose out-of-fold ``logits`` (same images, in order) are
    given, departing from the ``reference`` weights only beyond the noise, every image counted by
    its class's weight in ``class_weights`` (default: equally; module docstring)."""
    weights_of_images = image_weights(labels, class_weights)
    per_class = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
    temperatures = {name: fit_temperature(torch.from_numpy(np.asarray(values, dtype=np.float32)), torch.from_numpy(labels),
                                          per_class) for name, values in logits.items()}  # fmt: skip
    tempered = {name: log_softmax(np.asarray(values, dtype=np.float64) / temperatures[name])
                for name, values in logits.items()}  # fmt: skip
    reference = normalized({name: reference.get(name, 0.0) for name in logits})
    selected = normalized({name: w if w >= MIN_WEIGHT else 0.0
                           for name, w in greedy_selection(tempered, labels, weights=weights_of_images).items()})  # fmt: skip
    gain = (image_losses(mixture(tempered, reference), labels, weights_of_images)
            - image_losses(mixture(tempered, selected), labels, weights_of_images))  # fmt: skip
    share = bootstrap_share(gain)
    if share >= CONFIDENCE and gain.mean() >= MIN_GAIN:
        weights, reason = selected, f"the selected weights' log loss beat the reference's in {share:.0%} of the draws"
    else:
        weights, reason = reference, (f"kept the reference: the selection beat it in only {share:.0%} of the draws"
                                      if share < CONFIDENCE else f"kept the reference: the selection gains "
                                      f"{gain.mean():.1e} nats an image, less than {MIN_GAIN}")  # fmt: skip
    correct = {name: (values.argmax(1) == labels) * weights_of_images for name, values in tempered.items()}
    best = max(correct, key=lambda name: (correct[name].mean(),
                                          -image_losses(tempered[name], labels, weights_of_images).mean()))  # fmt: skip
    chosen_correct = (mixture(tempered, weights).argmax(1) == labels) * weights_of_images
    best_share = bootstrap_share(correct[best] - chosen_correct, seed=1)
    if best_share >= CONFIDENCE:
        weights = {name: float(name == best) for name in logits}
        reason = f"{best} alone: more accurate than the combination in {best_share:.0%} of the draws"
    scores = {name: _score(values, labels, weights_of_images) for name, values in tempered.items()}
    scores["combination"] = _score(mixture(tempered, weights), labels, weights_of_images)
    return Combination(weights, temperatures, reason, scores)
