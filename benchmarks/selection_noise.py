"""How often the check's combination leaves the equal-weight reference on constructed evidence,
judged two ways: on the very images the weights were selected on (the check before 2026-12-07) and
on the images each bootstrap draw left out (``combine.out_of_bag``, as shipped).

Each set: ``--candidates`` out-of-fold candidates on N labelled images of 4 classes, logits with a
part shared by all (they see the same images) and a part of their own. ``alike``: every candidate
right on 70% of the images - the equal weights are the best there are, so every departure is
noise. ``one better``: one candidate right on 85%, the others on 70% - a departure toward it is
right. Printed: the share of sets on which each judgment departed (``alike``: every departure is
noise, the confidence allows 10%), and what each choice scores against the equal weights on 4,000
fresh images of the same construction (the candidates' temperatures from the labelled ones). The
check as shipped may also pick the best single candidate; the in-sample judgment is replayed for
the selection alone.

    cd benchmarks && python selection_noise.py --sets 40
"""

from __future__ import annotations

import argparse

import numpy as np

from transferlab.advisor.combine import (
    CONFIDENCE,
    MIN_GAIN,
    bootstrap_share,
    combine,
    image_losses,
    log_softmax,
    mixture,
    selection,
    tempered_log_probabilities,
)

CLASSES = 4
FRESH_IMAGES = 4000  # images of the same construction that judge each choice


def candidates(images: int, count: int, better: bool, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``count`` candidates' logits on ``images`` images, each right on its accuracy's share of them
    (the first on 85% where ``better``, the others on 70%) plus a part all of them share; and the labels."""
    labels = np.arange(images) % CLASSES
    shared = rng.normal(0, 1.0, (images, CLASSES))
    logits = {}
    for i in range(count):
        right = rng.random(images) < (0.85 if better and i == 0 else 0.7)
        pointed = np.where(right, labels, (labels + rng.integers(1, CLASSES, images)) % CLASSES)
        logits[f"c{i}"] = rng.normal(0, 0.3, (images, CLASSES)) + shared
        logits[f"c{i}"][np.arange(images), pointed] += 2.0
    return logits, labels


def in_sample_weights(tempered: dict[str, np.ndarray], labels: np.ndarray, reference: dict[str, float]) -> dict[str, float]:
    """The check before: weights selected on every image, their gain bootstrapped on the same images."""
    selected = selection(tempered, labels, np.ones(len(labels)))
    gain = image_losses(mixture(tempered, reference), labels) - image_losses(mixture(tempered, selected), labels)
    return selected if bootstrap_share(gain) >= CONFIDENCE and gain.mean() >= MIN_GAIN else reference


def one_set(images: int, count: int, better: bool, seed: int) -> list[float]:
    """Departed in sample, departed out of bag, and each choice's accuracy gain over the reference on
    fresh images of the same construction."""
    rng = np.random.default_rng(seed)
    logits, labels = candidates(images, count, better, rng)
    temperatures, tempered = tempered_log_probabilities(logits, labels)
    reference = dict.fromkeys(logits, 1 / count)
    before = in_sample_weights(tempered, labels, reference)
    shipped = combine(logits, labels, reference)
    fresh_logits, fresh_labels = candidates(FRESH_IMAGES, count, better, rng)
    fresh = {name: log_softmax(values / temperatures[name]) for name, values in fresh_logits.items()}

    def accuracy(weights: dict[str, float]) -> float:
        return float((mixture(fresh, weights).argmax(1) == fresh_labels).mean())

    def departed(weights: dict[str, float]) -> bool:
        return not np.allclose([weights[name] for name in logits], [reference[name] for name in logits])

    return [departed(before), departed(shipped.weights),
            100 * (accuracy(before) - accuracy(reference)), 100 * (accuracy(shipped.weights) - accuracy(reference))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", type=int, default=40, help="constructed sets per size and kind")
    parser.add_argument("--images", type=int, nargs="+", default=[36, 60, 130, 400])
    parser.add_argument("--candidates", type=int, default=7)
    args = parser.parse_args()
    print("| labelled images | kind | departed, judged in sample / out of bag | accuracy on fresh images against the "
          "reference, in sample / out of bag (points) |\n|---|---|---|---|")
    for images in args.images:
        for better in (False, True):
            runs = np.array([one_set(images, args.candidates, better, seed) for seed in range(args.sets)])
            kind = "one better" if better else "alike"
            print(f"| {images} | {kind} | {runs[:, 0].mean():.0%} / {runs[:, 1].mean():.0%} | "
                  f"{runs[:, 2].mean():+.2f} / {runs[:, 3].mean():+.2f} |", flush=True)


if __name__ == "__main__":
    main()
