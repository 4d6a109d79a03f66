"""Would ``multicut``'s closed-form head gain from augmented copies of its training images?

The networks train on augmented images from 30 a class; the frozen heads never see augmentation:
``multicut``'s ridge classifier is fitted on one row of features per labelled image. This fits it
again with ``--copies`` augmented copies of every labelled image added as rows of the same class
(``loops.augment_batch``: a random crop of 60-100% of the area and, half the time, a mirror - the
networks' recipe; each copy through the frozen body at every cut), at the penalty the shipped rule
picks by exact leave-one-out on the images as they are (leave-one-out over the copies would leave
an image's own copies in), each tap standardized on the images as they are, and scores the folder's
test split; beside it the shipped head (the same penalty, no copies). Every ``imbalanced.py`` folder
given, test balanced accuracy and the exact sign-flip test over the data sets. Trains no network.

    cd benchmarks && python augmented_features.py --runs ../runs/user-12d ../runs/user-40d --seeds 0 1 \\
        --copies 1 4 --cache-dir /tmp/study-cache
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

import transferlab as tl
from transferlab import transferability
from transferlab.advisor.study import paired_test_by_set
from transferlab.metrics import classification_metrics
from transferlab.prepare import prepare
from transferlab.trainer.context import RunContext
from transferlab.trainer.extraction import cached_splits, readable_rows
from transferlab.trainer.frozen import tap_widths_at
from transferlab.trainer.loops import augment_batch, to_unit_float
from transferlab.trainer.stages import STAGES
from transferlab.trainer.train import build_model

RESOLUTION = 112
SHIPPED = "shipped (no copies)"


def folder_scores(folder: Path, seed: int, copies: list[int], cache_dir: str) -> dict[str, float]:
    """Test balanced accuracy of the head fitted without and with each number of augmented copies."""
    config = tl.TrainConfig(data=str(folder), strategy="multicut", resolution=RESOLUTION, seed=seed,
                            out=f"/tmp/augmented-features/{folder.name}", cache_dir=cache_dir)  # fmt: skip
    prepared = prepare(config)
    torch.manual_seed(seed)
    model, cut = build_model(prepared, config)
    model.eval()
    stage = STAGES["multicut"](model, prepared, cut, config, RunContext(Path(config.out)))
    rows = {s: stage.inputs[s].readable(getattr(prepared.splits, s).labels) for s in ("train", "val", "test")}
    x = np.vstack([np.asarray(rows[s][0], dtype=np.float64) for s in ("train", "val")])
    y = np.concatenate([np.asarray(rows[s][1]) for s in ("train", "val")])
    test_x, test_y = np.asarray(rows["test"][0], dtype=np.float64), np.asarray(rows["test"][1])
    decoded, _ = cached_splits(None, {}, prepared, RESOLUTION, config, "decode", splits=("train", "val"))
    pixels = readable_rows(decoded, prepared)
    pixels = torch.from_numpy(np.concatenate([np.asarray(pixels[s][0]) for s in ("train", "val")]))
    mean, scale = transferability.tap_standardization(x, tap_widths_at(prepared, cut))
    classes = len(prepared.classes)
    _, errors, *_ = transferability._ridge_leave_one_out((x - mean) / scale, np.eye(classes)[y], None,
                                                         transferability.CLASSIFIER_PENALTIES)  # fmt: skip
    penalty = transferability.CLASSIFIER_PENALTIES[int(np.argmin(errors))]

    def score(fitted_x: np.ndarray, fitted_y: np.ndarray) -> float:
        *_, design, centre, u, s2, projected, penalty_scale = transferability._ridge_leave_one_out(
            (fitted_x - mean) / scale, np.eye(classes)[fitted_y], None, (penalty,))
        weights, bias = transferability._ridge_weights(design, centre, u, s2, projected, penalty * penalty_scale)
        predicted = (((test_x - mean) / scale) @ weights + bias).argmax(1)
        return 100 * classification_metrics(test_y, predicted, prepared.classes)["balanced_accuracy"]

    def features(images: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate([model.body(model.normalize(to_unit_float(images[i:i + 64]))).flatten(1).numpy()
                                   for i in range(0, len(images), 64)]).astype(np.float64)  # fmt: skip

    found = {SHIPPED: score(x, y)}
    torch.manual_seed(seed)
    augmented = [features(augment_batch(pixels)) for _ in range(max(copies))]
    for count in copies:
        found[f"{count} augmented copies"] = score(np.vstack([x, *augmented[:count]]), np.concatenate([y] * (count + 1)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="imbalanced.py --out folders")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--cache-dir", default="/tmp/study-cache")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    for runs in args.runs:
        scored = {}
        for seed in args.seeds:
            for folder in sorted((runs / "data").glob(f"*-seed{seed}")):
                scored[folder.name.replace("-seed", "@seed")] = folder_scores(folder, seed, args.copies, args.cache_dir)
                print(folder.name, {k: round(v, 2) for k, v in scored[folder.name.replace("-seed", "@seed")].items()},
                      flush=True)  # fmt: skip
        rules = list(next(iter(scored.values())))
        print(f"\n{runs.name}, {len(scored)} folders: mean test balanced accuracy")
        for rule in rules:
            line = f"  {rule}: {np.mean([s[rule] for s in scored.values()]):.2f}"
            if rule != SHIPPED:
                test = paired_test_by_set({c: {r: -v for r, v in s.items()} for c, s in scored.items()}, rule, SHIPPED)
                higher = sum(s[rule] > s[SHIPPED] for s in scored.values())
                lower = sum(s[rule] < s[SHIPPED] for s in scored.values())
                line += (f" ({test['mean_difference']:+.2f} against shipped, {higher} higher / {lower} lower, "
                         f"p = {test['p_value']:.3f} over {test['sets']} sets)")  # fmt: skip
            print(line)


if __name__ == "__main__":
    main()
