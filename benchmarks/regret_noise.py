"""How much of the study's regret is its test split's own noise (issue #31's regret goals).

A cell's regret is the best option's test balanced accuracy minus the rule's, both measured on the
same few test images, so even a rule that always chose the truly best option shows regret: another
option beats it on those images by chance. To size that floor, every option's test predictions are
recomputed image by image from its saved model (the study's runs, its ensemble from its members as
the study scores it, and the default's run from ``benchmarks/default_on_own_images.py``; cached in
--out), and the test split is resampled class by class with replacement, 1,000 times: on each
resample, the regret of the option best on the whole split (standing in for the truly best one; it
was chosen on these images, so the floor is if anything understated) and each rule's regret.

    python benchmarks/regret_noise.py --study runs/study-colour --default runs/default-own/runs \\
        --out runs/regret-noise --cache-dir /tmp/study-cache --sizes 5 10 30
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from transferlab.advisor.study import saved_outputs
from transferlab.config import TrainConfig
from transferlab.prepare import prepare
from transferlab.trainer.train import ensemble_stage

RESAMPLES = 1000  # of each cell's test split, class by class
RULES = {"default": "default", "always ensemble": "ensemble-final", "always multicut": "multicut-all",
         "always head": "head-final", "always finetune": "finetune-final"}  # fmt: skip


def cell_predictions(cell: Path, default_model: Path, cache_dir: str | None, out: Path) -> dict | None:
    """Every option's test predictions in ``cell`` (seed 0) and the labels, cached as ``out/<cell>.npz``."""
    saved = out / f"{cell.name}.npz"
    if saved.exists():
        found = dict(np.load(saved))
        return {"labels": found.pop("labels"), "predictions": found}
    runs = {p.parent.name: json.loads(p.read_text()) for p in sorted((cell / "seed0").glob("*/study-run.json"))}
    if "ensemble-final" not in runs or not (default_model / "model").is_dir():
        return None
    data, _ = cell.name.rsplit("@", 1)
    flags = runs["head-final"]["config"]
    run = prepare(TrainConfig(data=data, resolution=flags["resolution"], samples_per_class=flags["samples_per_class"],
                              test_per_class=flags["test_per_class"], seed=0, cache_dir=cache_dir))  # fmt: skip
    stages = {name: saved_outputs(run, cell / "seed0" / name / "model") for name in runs if name != "ensemble-final"}
    members = [Path(member["out"]).name for member in runs["ensemble-final"]["config"]["members"]]
    stages["ensemble-final"], _ = ensemble_stage([stages[name] for name in members])
    stages["default"] = saved_outputs(run, default_model / "model")
    labels = stages["default"].labels["test"]
    predictions = {name: stage.logits["test"].argmax(1).numpy() for name, stage in stages.items()}
    np.savez(saved, labels=labels, **predictions)
    return {"labels": labels, "predictions": predictions}


def balanced(correct: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Balanced accuracy of each option (rows of ``correct``) over the images ``mask`` keeps."""
    classes = np.unique(labels)
    return np.mean([correct[:, mask & (labels == c)].mean(1) for c in classes], axis=0)


def resampled_regrets(found: dict, rng: np.random.Generator, rules: dict[str, str] = RULES) -> dict[str, float]:
    """Mean regret over :data:`RESAMPLES` resamples of the test split of the option best on the whole
    split (``floor``) and of each rule (``rules``: rule -> the option it always picks)."""
    names, labels = list(found["predictions"]), found["labels"]
    correct = np.stack([found["predictions"][name] == labels for name in names]).astype(float)
    best = int(balanced(correct, labels, np.ones(len(labels), dtype=bool)).argmax())
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    totals = {"floor": 0.0, **dict.fromkeys(rules, 0.0)}
    for _ in range(RESAMPLES):
        scores = np.mean([correct[:, rng.choice(members, len(members))].mean(1) for members in by_class], axis=0)
        totals["floor"] += scores.max() - scores[best]
        for rule, name in rules.items():
            totals[rule] += scores.max() - scores[names.index(name)]
    return {rule: 100 * total / RESAMPLES for rule, total in totals.items()}


def full_regrets(found: dict, rules: dict[str, str] = RULES) -> dict[str, float]:
    """Each rule's regret on the whole test split, as the study scores it."""
    labels = found["labels"]
    names = list(found["predictions"])
    correct = np.stack([found["predictions"][name] == labels for name in names]).astype(float)
    scores = balanced(correct, labels, np.ones(len(labels), dtype=bool))
    return {rule: 100 * (scores.max() - scores[names.index(name)]) for rule, name in rules.items()}


def print_noise(rows: list[tuple[str, int, dict, dict]], rules: dict[str, str] = RULES) -> None:
    """The table of each cell's floor and rules' regrets (``rows``: cell, test images, regrets on the
    whole split, resampled), then their means and worsts."""
    print("| cell | test images | floor | " + " | ".join(f"{r}: split / resampled" for r in rules) + " |")
    print("|---|---|---|" + "---|" * len(rules))
    for name, images, whole, resampled in rows:
        print(f"| {name} | {images} | {resampled['floor']:.2f} | "
              + " | ".join(f"{whole[r]:.2f} / {resampled[r]:.2f}" for r in rules) + " |")  # fmt: skip
    print()
    floor = np.asarray([resampled["floor"] for *_, resampled in rows])
    print(f"floor (the best option's own regret on resampled test splits): mean {floor.mean():.2f}, worst cell "
          f"{floor.max():.2f} points over {len(rows)} cells")  # fmt: skip
    for rule in rules:
        whole = np.asarray([w[rule] for _, _, w, _ in rows])
        resampled = np.asarray([r[rule] for *_, r in rows])
        print(f"{rule}: on the split mean / worst {whole.mean():.2f} / {whole.max():.2f}; "
              f"resampled {resampled.mean():.2f} / {resampled.max():.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="runs/study-colour")
    parser.add_argument("--default", default="runs/default-own/runs")
    parser.add_argument("--out", default="runs/regret-noise")
    parser.add_argument("--cache-dir")
    parser.add_argument("--sizes", nargs="+", type=int, default=[5, 10, 30])
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for cell in sorted(p for p in Path(args.study).iterdir() if "@" in p.name and int(p.name.rsplit("@", 1)[1]) in args.sizes):
        found = cell_predictions(cell, Path(args.default) / f"{cell.name}-seed0", args.cache_dir, out)
        if found is not None:
            rows.append((cell.name, len(found["labels"]), full_regrets(found), resampled_regrets(found, rng)))
            print(f"{cell.name}: done", flush=True)
    print_noise(rows)


if __name__ == "__main__":
    main()
