"""The candidates' combination, fitted on their out-of-fold predictions and hedged against their noise.

Each candidate's temperature is fitted on its out-of-fold logits (every labelled image, never a
handful of validation images); member weights come from greedy ensemble selection with
replacement on the tempered probabilities, minimizing log loss (Caruana et al., "Ensemble
selection from libraries of models", ICML 2004); a member below :data:`MIN_WEIGHT` is dropped. The selection replaces the equal-weight
reference (today's ``ensemble``) only where a paired bootstrap over the labelled images says its
log loss is lower with :data:`CONFIDENCE` (and by at least :data:`MIN_GAIN`); and the best single candidate replaces whatever was
chosen where the bootstrap says it is more accurate with the same confidence. Both are chosen again
on each bootstrap draw and judged on the images the draw left out (:func:`out_of_bag`): weights
picked among many candidates fit their own images' noise, and judged on those same images they
beat the reference in nearly every draw. So a member can reach weight 0 when it is clearly worse,
and noise alone moves nothing.

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
OUT_OF_BAG_DRAWS = 200  # bootstrap draws on which the selection and the best single candidate are chosen again
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


def hits(log_probabilities: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each image's weight where its most probable class is its label, else 0."""
    return (log_probabilities.argmax(1) == labels) * weights


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
    the counts over ``rounds``. An image's loss reads only its label's probability, so the rounds
    run on those alone (log space: a confident miss does not underflow)."""
    names = list(log_probabilities)
    truth = np.stack([log_probabilities[name][np.arange(len(labels)), labels] for name in names], 1)
    counted = np.ones(len(labels)) if weights is None else weights
    summed = np.full(len(labels), -np.inf)  # log of the chosen members' label probabilities, summed
    counts = np.zeros(len(names), dtype=int)
    for step in range(1, rounds + 1):
        losses = -(counted[:, None] * (np.logaddexp(summed[:, None], truth) - np.log(step))).mean(0)
        pick = int(np.argmin(losses))
        counts[pick] += 1
        summed = np.logaddexp(summed, truth[:, pick])
    return {name: count / rounds for name, count in zip(names, counts)}


def selection(log_probabilities: dict[str, np.ndarray], labels: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """The greedy selection's weights, members below :data:`MIN_WEIGHT` dropped."""
    chosen = greedy_selection(log_probabilities, labels, weights=weights)
    return normalized({name: w if w >= MIN_WEIGHT else 0.0 for name, w in chosen.items()})


def best_single(log_probabilities: dict[str, np.ndarray], labels: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """All the weight on the most accurate candidate (ties: the lower log loss)."""

    def merit(name: str) -> tuple[float, float]:
        return (float(hits(log_probabilities[name], labels, weights).mean()),
                -float(image_losses(log_probabilities[name], labels, weights).mean()))

    best = max(log_probabilities, key=merit)
    return {name: float(name == best) for name in log_probabilities}


def out_of_bag(log_probabilities: dict[str, np.ndarray], labels: np.ndarray, weights: np.ndarray,
               reference: dict[str, float], draws: int = OUT_OF_BAG_DRAWS, seed: int = 0) -> dict[str, np.ndarray]:  # fmt: skip
    """Each choice made on a bootstrap draw of the images and judged on the images the draw left out,
    per draw: ``"selection"``, the selection's log-loss gain over the ``reference`` weights;
    ``"single_over_selection"`` and ``"single_over_reference"``, the best single candidate's accuracy
    gain over each (image weights counted). Judged on their own images, weights picked among many
    candidates fit those images' noise and beat the reference in nearly every draw."""
    rng = np.random.default_rng(seed)
    referenced = mixture(log_probabilities, reference)
    gains = {"selection": [], "single_over_selection": [], "single_over_reference": []}
    for _ in range(draws):
        drawn = rng.integers(0, len(labels), len(labels))
        left = np.setdiff1d(np.arange(len(labels)), drawn)
        if not len(left):
            continue
        inside = {name: lp[drawn] for name, lp in log_probabilities.items()}
        outside = {name: lp[left] for name, lp in log_probabilities.items()}
        selected = mixture(outside, selection(inside, labels[drawn], weights[drawn]))
        single = mixture(outside, best_single(inside, labels[drawn], weights[drawn]))
        truth, counted, reference_left = labels[left], weights[left], referenced[left]
        gains["selection"].append(float((image_losses(reference_left, truth, counted)
                                         - image_losses(selected, truth, counted)).mean()))  # fmt: skip
        right = hits(single, truth, counted)
        gains["single_over_selection"].append(float((right - hits(selected, truth, counted)).mean()))
        gains["single_over_reference"].append(float((right - hits(reference_left, truth, counted)).mean()))
    return {name: np.array(values) for name, values in gains.items()}


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
    correct = hits(log_probabilities, labels, weights)
    low, high = bootstrap_interval(correct)
    return {"accuracy": float(correct.mean()), "interval": [low, high],
            "log_loss": float(image_losses(log_probabilities, labels, weights).mean())}  # fmt: skip


def tempered_log_probabilities(logits: dict[str, np.ndarray], labels: np.ndarray, class_weights: np.ndarray | None = None
                               ) -> tuple[dict[str, float], dict[str, np.ndarray]]:  # fmt: skip
    """Each candidate's temperature fitted on its out-of-fold ``logits``, and its log probabilities under it."""
    per_class = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
    temperatures = {name: fit_temperature(torch.from_numpy(np.asarray(values, dtype=np.float32)), torch.from_numpy(labels),
                                          per_class) for name, values in logits.items()}  # fmt: skip
    return temperatures, {name: log_softmax(np.asarray(values, dtype=np.float64) / temperatures[name])
                          for name, values in logits.items()}  # fmt: skip


def combine(logits: dict[str, np.ndarray], labels: np.ndarray, reference: dict[str, float],
            class_weights: np.ndarray | None = None) -> Combination:  # fmt: skip
    """The combination of the candidates whose out-of-fold ``logits`` (same images, in order) are
    given, departing from the ``reference`` weights only beyond the noise, every image counted by
    its class's weight in ``class_weights`` (default: equally; module docstring)."""
    weights_of_images = image_weights(labels, class_weights)
    temperatures, tempered = tempered_log_probabilities(logits, labels, class_weights)
    reference = normalized({name: reference.get(name, 0.0) for name in logits})
    judged = out_of_bag(tempered, labels, weights_of_images, reference)
    share, gain = float((judged["selection"] > 0).mean()), float(judged["selection"].mean())
    departs = share >= CONFIDENCE and gain >= MIN_GAIN
    if departs:
        weights = selection(tempered, labels, weights_of_images)
        reason = f"the selected weights' log loss beat the reference's on the images each draw left out in {share:.0%} of the draws"
    else:
        weights, reason = reference, (f"kept the reference: the selection beat it on the images left out in only "
                                      f"{share:.0%} of the draws" if share < CONFIDENCE else f"kept the reference: "
                                      f"the selection gains {gain:.1e} nats an image, less than {MIN_GAIN}")  # fmt: skip
    best_share = float((judged["single_over_selection" if departs else "single_over_reference"] > 0).mean())
    if best_share >= CONFIDENCE:
        weights = best_single(tempered, labels, weights_of_images)
        reason = (f"{max(weights, key=weights.get)} alone: the best single candidate was more accurate than the "
                  f"combination on the images each draw left out in {best_share:.0%} of the draws")  # fmt: skip
    scores = {name: _score(values, labels, weights_of_images) for name, values in tempered.items()}
    scores["combination"] = _score(mixture(tempered, weights), labels, weights_of_images)
    return Combination(weights, temperatures, reason, scores)
