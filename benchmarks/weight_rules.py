"""How the default's check turns out-of-fold evidence into member weights, replayed on user-like folders.

``imbalanced.py`` left, for every folder it wrote, the default's run (its candidates' out-of-fold
logits in the cache: ``CACHE/crossfit/<images>/<candidate>/fold-<i>.npz``) and the saved models of
``head``, ``finetune`` and ``multicut`` trained alone on the same split. Each rule here reads the
out-of-fold logits, gives the candidates weights, and is scored by mixing those saved models' test
probabilities with the weights (temperatures fitted out of fold, as the default does; every image
counted by its class's weight, as the check counts it): nothing is trained. Candidates with no saved model trained alone (``finetune-adapted-bn``, a head at an inner
cut) are left out of every rule alike. Rules:

- ``as shipped``: ``combine.combine`` - the greedy selection replaces the equal-weight reference
  where its log loss wins 90% of a paired bootstrap, the best single candidate replaces both where
  its accuracy does;
- ``bagged selection``: the greedy selection run on :data:`BAGS` bootstrap resamples of the labelled
  images and its weights averaged (members under ``MIN_WEIGHT`` dropped), so weights move only as
  far as the evidence is stable under resampling (bagged ensemble selection, Caruana et al. 2004/2006);
- ``bagged selection on accuracy``: the same, each round adding what makes the mixture most accurate
  (Caruana's selection on the metric itself, log loss breaking ties);
- ``shrunk by confidence``: the reference plus ``2 * share - 1`` (clipped to [0, 1]) of the way to
  the selection, ``share`` being the bootstrap's;
- ``best single by log loss``: no hedge at all;
- ``as shipped, the head in the reference``: the shipped rule, its equal-weight reference every
  candidate of :data:`ALONE` (the computed ``head`` beside the ensemble's members);
- ``as shipped, multicut by exact leave-one-out``: the shipped rule, ``multicut``'s evidence its
  closed-form leave-one-out scores on every labelled image (what issue #31 asks for where a closed
  form exists) instead of its three fold runs' (:func:`multicut_leave_one_out`).

Beside them the runs themselves: the default as it ran (every candidate), always-``ensemble`` and
always-``multicut``. Regret: points of test balanced accuracy below the folder's best option as run.

    cd benchmarks && python weight_rules.py --runs ../runs/user-12b --seeds 0 1 2 --out ../runs/weight-rules \\
        --cache-dir /tmp/study-cache --data emoji-apple emoji-google emoji-twitter emoji-facebook emoji-fluent \\
        furniture cartoons
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from combination_rules import prepared_run, raw_out_of_fold
from torch import nn

from transferlab.advisor.combine import (
    MIN_WEIGHT,
    SELECTION_ROUNDS,
    bootstrap_share,
    combine,
    greedy_selection,
    image_losses,
    image_weights,
    log_softmax,
    mixture,
    normalized,
)
from transferlab.advisor.crossfit import labelled_folds
from transferlab.advisor.study import paired_test_by_set, saved_outputs
from transferlab.bundle import load_bundle
from transferlab.ensemble import fit_temperature
from transferlab.features import compute_outputs
from transferlab.metrics import classification_metrics
from transferlab.strategies import ensemble_entry
from transferlab.trainer.loops import balanced_weights
from transferlab.transferability import ridge_classifier, tap_standardization

ALONE = ("head", "finetune", "multicut")  # the candidates imbalanced.py trained alone
LEAVE_ONE_OUT = "as shipped, multicut by exact leave-one-out"
WITH_HEAD = "as shipped, the head in the reference"
OPTIONS = ("auto", "ensemble", "multicut", "head", "finetune")
BAGS = 64


def out_of_fold(prepared, seed: int, cache_dir: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The raw out-of-fold logits of each candidate of :data:`ALONE` that ran every fold, and the labels."""
    found, labels = raw_out_of_fold(prepared, seed, cache_dir)
    return {name: found[name] for name in ALONE if name in found}, labels


def test_logits(runs: Path, folder: str, prepared, names, out: Path) -> dict[str, np.ndarray]:
    """Each saved model's test logits (cached in ``out``)."""
    saved = out / runs.name / f"{folder}-test-logits.npz"
    saved.parent.mkdir(parents=True, exist_ok=True)
    if not saved.exists():
        logits = {name: saved_outputs(prepared, runs / "runs" / f"{folder}-{name}-table" / "model").logits["test"].numpy()
                  for name in ALONE}  # fmt: skip
        np.savez(saved, **logits)
    return {name: value for name, value in np.load(saved).items() if name in names}


def accuracy_selection(tempered: dict[str, np.ndarray], labels: np.ndarray, images: np.ndarray,
                       rounds: int = SELECTION_ROUNDS) -> dict[str, float]:  # fmt: skip
    """Caruana's greedy selection on the metric itself: each round adds the candidate whose addition
    gives the most accurate mixture, each image counted by its weight in ``images`` (ties: the
    lower log loss)."""
    counts = dict.fromkeys(tempered, 0)

    def score(name: str) -> tuple[float, float]:
        total = sum(counts.values()) + 1
        mixed = mixture(tempered, {n: (c + (n == name)) / total for n, c in counts.items()})
        return float(((mixed.argmax(1) == labels) * images).mean()), -float(image_losses(mixed, labels, images).mean())

    for _ in range(rounds):
        counts[max(counts, key=score)] += 1
    return {name: count / rounds for name, count in counts.items()}


def log_loss_selection(tempered: dict[str, np.ndarray], labels: np.ndarray, images: np.ndarray) -> dict[str, float]:
    return greedy_selection(tempered, labels, weights=images)


def bagged(select, tempered: dict[str, np.ndarray], labels: np.ndarray, images: np.ndarray, seed: int = 0) -> dict[str, float]:
    """``select``'s weights averaged over :data:`BAGS` bootstrap resamples of the images, members
    under ``MIN_WEIGHT`` dropped."""
    rng = np.random.default_rng(seed)
    total = dict.fromkeys(tempered, 0.0)
    for _ in range(BAGS):
        pick = rng.integers(0, len(labels), len(labels))
        for name, weight in select({n: lp[pick] for n, lp in tempered.items()}, labels[pick], images[pick]).items():
            total[name] += weight / BAGS
    return normalized({name: w if w >= MIN_WEIGHT else 0.0 for name, w in total.items()})


def shrunk_by_confidence(tempered: dict[str, np.ndarray], labels: np.ndarray, images: np.ndarray,
                         reference: dict[str, float]) -> dict[str, float]:  # fmt: skip
    selected = normalized({n: w if w >= MIN_WEIGHT else 0.0 for n, w in log_loss_selection(tempered, labels, images).items()})
    gain = image_losses(mixture(tempered, reference), labels, images) - image_losses(mixture(tempered, selected), labels, images)
    step = float(np.clip(2 * bootstrap_share(gain) - 1, 0, 1))
    return normalized({n: reference[n] + step * (selected[n] - reference[n]) for n in tempered})


def best_single(tempered: dict[str, np.ndarray], labels: np.ndarray, images: np.ndarray) -> dict[str, float]:
    best = min(tempered, key=lambda n: image_losses(tempered[n], labels, images).mean())
    return {n: float(n == best) for n in tempered}


def shipped_class_weights(labels: np.ndarray, classes: int) -> np.ndarray:
    """The class weights the default's check counts images by (the ensemble's: balanced)."""
    return balanced_weights(torch.from_numpy(labels), classes, ensemble_entry().class_weight).numpy()


def rule_weights(logits: dict[str, np.ndarray], labels: np.ndarray, classes: int) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Each rule's weights, every image counted by its class's weight as the check counts it, and
    the candidates' out-of-fold temperatures."""
    class_weights = shipped_class_weights(labels, classes)
    images = image_weights(labels, class_weights)
    temperatures = {n: fit_temperature(torch.from_numpy(v), torch.from_numpy(labels), torch.from_numpy(class_weights))
                    for n, v in logits.items()}  # fmt: skip
    tempered = {n: log_softmax(v / temperatures[n]) for n, v in logits.items()}
    reference = normalized({n: float(n in ensemble_entry().members) for n in logits})
    return {"as shipped": combine(logits, labels, dict.fromkeys(ensemble_entry().members, 1.0), class_weights).weights,
            "bagged selection": bagged(log_loss_selection, tempered, labels, images),
            "bagged selection on accuracy": bagged(accuracy_selection, tempered, labels, images),
            "shrunk by confidence": shrunk_by_confidence(tempered, labels, images, reference),
            "best single by log loss": best_single(tempered, labels, images),
            WITH_HEAD: combine(logits, labels, dict.fromkeys(logits, 1.0), class_weights).weights}, temperatures  # fmt: skip


def multicut_leave_one_out(runs: Path, folder: str, prepared, seed: int, out: Path) -> np.ndarray:
    """``multicut``'s exact leave-one-out logits on the labelled images, in the folds' order: the
    saved model's taps read every labelled image (cached in ``out``), standardized per tap, the
    ridge classifier of leave-one-out strength fitted in closed form on all of them (balanced class
    weights, as the strategy fits it), each image scored by the fit without it and divided by the
    temperature the final head takes from those scores."""
    labelled, folds = labelled_folds(prepared.splits, seed)
    model = runs / "runs" / f"{folder}-multicut-table" / "model"
    saved = out / runs.name / f"{folder}-labelled-features.npz"
    if not saved.exists():
        network, _ = load_bundle(model)
        features = compute_outputs(nn.Sequential(network.normalize, network.body).eval(), labelled,
                                   network.preprocessing.resolution, desc="labelled features")  # fmt: skip
        np.savez(saved, x=np.asarray(features.readable(labelled.labels)[0]))
    x, y = np.load(saved)["x"], labelled.labels
    widths = [tap["channels"] for tap in json.loads((model / "bundle.json").read_text())["taps"]]
    mean, scale = tap_standardization(x, widths)
    weights = balanced_weights(torch.from_numpy(y), len(prepared.classes), "balanced")
    ridge = ridge_classifier((x - mean) / scale, y, len(prepared.classes), weights.numpy())
    temperature = fit_temperature(torch.from_numpy(ridge.loo_scores).float(), torch.from_numpy(y), weights)
    return ridge.loo_scores[np.concatenate([fold.scored for fold in folds])] / temperature


def folder_row(runs: Path, folder: str, seed: int, cache_dir: Path, out: Path) -> dict[str, float] | None:
    """One folder's regret per rule and per option as run, or None where its runs are unfinished."""
    results = {option: runs / f"{folder}-{option}-table.json" for option in OPTIONS}
    if not all(path.exists() for path in results.values()):
        return None
    scores = {option: 100 * json.loads(path.read_text())["balanced_accuracy"] for option, path in results.items()}
    prepared = prepared_run(runs / "runs" / f"{folder}-auto-table")
    logits, labels = out_of_fold(prepared, seed, cache_dir)
    if not set(ensemble_entry().members) <= set(logits):
        return None  # the reference itself cannot be replayed
    rules, temperatures = rule_weights(logits, labels, len(prepared.classes))
    test = test_logits(runs, folder, prepared, logits, out)
    tempered = {n: log_softmax(v / temperatures[n]) for n, v in test.items()}
    best = max(scores.values())
    row = {f"{option} as run": best - scores[option] for option in ("auto", "ensemble", "multicut")}
    for rule, weights in rules.items():
        predicted = mixture(tempered, normalized(weights)).argmax(1)
        row[rule] = best - 100 * classification_metrics(prepared.splits.test.labels, predicted, prepared.classes)["balanced_accuracy"]
    exact = combine({**logits, "multicut": multicut_leave_one_out(runs, folder, prepared, seed, out)}, labels,
                    dict.fromkeys(ensemble_entry().members, 1.0), shipped_class_weights(labels, len(prepared.classes)))  # fmt: skip
    mixed = mixture({n: log_softmax(v / exact.temperatures[n]) for n, v in test.items()}, normalized(exact.weights))
    row[LEAVE_ONE_OUT] = best - 100 * classification_metrics(prepared.splits.test.labels, mixed.argmax(1),
                                                             prepared.classes)["balanced_accuracy"]  # fmt: skip
    rules[LEAVE_ONE_OUT] = exact.weights
    row["weights"] = {rule: {n: round(w, 2) for n, w in weights.items() if w > 0} for rule, weights in rules.items()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="an imbalanced.py --out folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/study-cache"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data", nargs="+", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name in args.data:
        for seed in args.seeds:
            row = folder_row(args.runs, f"{name}-seed{seed}", seed, args.cache_dir, args.out)
            if row is not None:
                rows[f"{name}@seed{seed}"] = row
    (args.out / f"{args.runs.name}.json").write_text(json.dumps(rows, indent=1))
    columns = [c for c in next(iter(rows.values())) if c != "weights"]
    print("| folder | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for folder, row in rows.items():
        print(f"| {folder} | " + " | ".join(f"{row[c]:.2f}" for c in columns) + " |")
    for label, reduce in (("mean", np.mean), ("worst", np.max)):
        print(f"| **{label}** | " + " | ".join(f"{reduce([r[c] for r in rows.values()]):.2f}" for c in columns) + " |")
    for rule in columns:
        if rule != "as shipped":
            test = paired_test_by_set(rows, rule, "as shipped")
            print(f"{rule} against as shipped: {test['mean_difference']:+.2f} points less regret "
                  f"over {test['sets']} data sets (p = {test['p_value']:.2f})")  # fmt: skip
    for folder, row in rows.items():
        print(folder, json.dumps(row["weights"]))


if __name__ == "__main__":
    main()
