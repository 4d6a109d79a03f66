"""How multicut's closed-form head chooses its penalty, and on which images, side by side.

Until 2026-12-05 the head took the best leave-one-out *accuracy* of five penalties a decade apart
and fitted the training split only (its temperature on the validation split). The accuracy of a
few hundred images moves in steps, so the choice jumped between neighbouring penalties with a
single image (cartoons, 12 a class, seed 1: penalty 1.0 without the validation images, 0.1 with
them, 7 points of test balanced accuracy apart). This replays, on the multicut features of the
folders `benchmarks/folder_defaults.py` wrote (every tap standardized as the head sees them, the features
read from the cache a run filled), each rule: the old and the new grid (``RIDGE_PENALTIES``,
``CLASSIFIER_PENALTIES``), each chosen by leave-one-out accuracy or squared error, fitted on the
training split or on training and validation images together; test balanced accuracy per folder
size, and the exact sign-flip test over the data sets of each rule against the old one. Nothing is
trained (the ridge fits take seconds); the rules share ``transferability``'s own leave-one-out code.

    python benchmarks/ridge_penalty.py --folders runs/holdout/data --cache-dir /tmp/study-cache
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from transferlab import transferability
from transferlab.advisor.study import paired_test_by_set
from transferlab.metrics import classification_metrics

OLD = "training split, 5 penalties, accuracy"
CRITERIA = {"accuracy": lambda accuracies, errors: max(range(len(accuracies)), key=lambda i: (accuracies[i], i)),
            "squared error": lambda accuracies, errors: int(np.argmin(errors))}  # fmt: skip
GRIDS = {"5 penalties": transferability.RIDGE_PENALTIES, "17 penalties": transferability.CLASSIFIER_PENALTIES}


def multicut_features(folder: Path, seed: int, cache_dir: str | None) -> tuple[dict, list[int]]:
    """Per split, the multicut features and labels of ``folder`` as ``--strategy multicut`` reads them
    (the run's own split of the images), and the taps' widths."""
    import torch

    import transferlab as tl
    from transferlab.prepare import prepare
    from transferlab.trainer.context import RunContext
    from transferlab.trainer.stages import STAGES
    from transferlab.trainer.train import build_model

    config = tl.TrainConfig(data=str(folder), strategy="multicut", resolution=112, seed=seed, holdout=True,
                            out=f"/tmp/ridge-penalty/{folder.name}", cache_dir=cache_dir)  # fmt: skip
    prepared = prepare(config)
    torch.manual_seed(config.seed)
    model, cut = build_model(prepared, config)
    stage = STAGES["multicut"](model, prepared, cut, config, RunContext(Path(config.out)))
    rows = {s: stage.inputs[s].readable(getattr(prepared.splits, s).labels) for s in ("train", "val", "test")}
    return {s: (np.asarray(x, dtype=np.float64), np.asarray(y)) for s, (x, y) in rows.items()}, [
        p.channels for p in prepared.backbone.cut_points]


def rule_scores(rows: dict, widths: list[int]) -> dict[str, float]:
    """Test balanced accuracy of every rule on one folder."""
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = rows["train"], rows["val"], rows["test"]
    classes = int(max(train_y.max(), test_y.max())) + 1
    names = [str(k) for k in range(classes)]
    scores = {}
    for images, (x, y) in {"training split": (train_x, train_y),
                           "with validation": (np.vstack([train_x, val_x]), np.concatenate([train_y, val_y]))}.items():  # fmt: skip
        mean, scale = transferability.tap_standardization(x, widths)
        standardized, test = (x - mean) / scale, (test_x - mean) / scale
        for grid_name, grid in GRIDS.items():
            accuracies, errors, _, design, centre, u, s2, projected, penalty_scale = transferability._ridge_leave_one_out(
                standardized, np.eye(classes)[y], None, grid)
            for criterion, choose in CRITERIA.items():
                weights, bias = transferability._ridge_weights(design, centre, u, s2, projected,
                                                               grid[choose(accuracies, errors)] * penalty_scale)
                predicted = (test @ weights + bias).argmax(1)
                scores[f"{images}, {grid_name}, {criterion}"] = 100 * classification_metrics(
                    test_y, predicted, names)["balanced_accuracy"]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", default="runs/holdout/data", help="benchmarks/folder_defaults.py's folders")
    parser.add_argument("--cache-dir")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    results: dict[str, dict[str, dict[str, float]]] = {}  # size -> set@seed -> rule -> score
    for folder in sorted(Path(args.folders).iterdir()):
        name, size, seed = folder.name.rsplit("-", 2)
        rows, widths = multicut_features(folder, int(seed.removeprefix("seed")), args.cache_dir)
        results.setdefault(size, {})[f"{name}@{seed}"] = rule_scores(rows, widths)
    for size, folders in results.items():
        print(f"\n{size} images a class, {len(folders)} folders: test balanced accuracy, and the rule minus the old one")
        print("| rule | mean | minus the old rule | p (by data set) |\n|---|---|---|---|")
        for rule in next(iter(folders.values())):
            regrets = {cell: {r: -scores[r] for r in (rule, OLD)} for cell, scores in folders.items()}
            test = paired_test_by_set(regrets, rule, OLD)
            mean = np.mean([scores[rule] for scores in folders.values()])
            print(f"| {rule} | {mean:.2f} | {test['mean_difference']:+.2f} | {test['p_value']:.2f} |")


if __name__ == "__main__":
    main()
