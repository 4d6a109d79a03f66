"""WiSE-FT interpolation and the BatchNorm choice for LP-FT on the data-set pool (issue 22).

Per cell (data set, images per class, seed) and per BatchNorm setting (statistics frozen, as
`finetune` defaults to, or adapted): one LP-FT run as `transferlab train --strategy finetune`
runs it, keeping the probe's network (alpha 0) and the fine-tuned one (alpha 1); then along the
line between them at alpha 0, 0.1, ..., 1 the validation loss and accuracy and the test balanced
accuracy. One run gives every alpha, so the rules below are compared on the same networks:

* none: alpha 1 (plain LP-FT), the former default;
* fixed alpha a: the same a everywhere;
* chosen on validation: the alpha of the best validation accuracy (ties: lower loss, then larger
  alpha);
* auto, what ``--interpolate auto`` runs: chosen on validation, but 0.5 below 10 validation images
  in the smallest class;
* and for BatchNorm: always frozen, always adapted, or the better on validation (after auto).

Resumable: each run's numbers are kept as JSON in --out.

    python benchmarks/interpolation.py --out runs/interpolation --cache-dir /tmp/interp-cache
    python benchmarks/interpolation.py --out runs/interpolation --report
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from pathlib import Path

import numpy as np
from resumable import arguments, record

DATA = ("fashion-mnist", "digits", "animal-mnist", "orientation", "count", "glyphs", "colour-shape", "textures")
SIZES = (5, 10, 30)
SEEDS = (0, 1, 2)
BATCHNORM = {"frozen": True, "adapted": False}
FLAGS = "--strategy finetune --resolution 64 --test-per-class 100 --samples-per-class N --seed S [--no-freeze-bn]"


def run_cell(data: str, size: int, seed: int, freeze_bn: bool, cache_dir: str | None) -> dict:
    """One LP-FT run and the line from its probe to its fine-tuned network (see the module's text)."""
    import torch

    from transferlab.config import TrainConfig
    from transferlab.features import cached_features, predict_pixels
    from transferlab.metrics import classification_metrics
    from transferlab.prepare import prepare
    from transferlab.trainer.interpolate import ALPHAS, along_the_line, load_blend, snapshot
    from transferlab.trainer.context import RunContext
    from transferlab.trainer.stages import STAGES
    from transferlab.trainer.train import build_model

    config = TrainConfig(data=data, strategy="finetune", resolution=64, test_per_class=100, samples_per_class=size,
                         seed=seed, freeze_bn=freeze_bn, cache_dir=cache_dir, out="/tmp/interpolation-run")  # fmt: skip
    started = time.perf_counter()
    prepared = prepare(config)
    torch.manual_seed(seed)
    model, cut = build_model(prepared, config)
    context = RunContext(Path(config.out))
    STAGES["probe"](model, prepared, cut, config, context)
    start = snapshot(model)
    tuned = STAGES["network"](model, prepared, cut, config, context)
    end = snapshot(model)
    seconds = time.perf_counter() - started
    val_pixels, _ = cached_features(None, {}, prepared.splits.val, 64, prepared.cache, desc="decode val")
    val_x, val_y = val_pixels.readable(prepared.splits.val.labels)
    test_pixels, _ = cached_features(None, {}, prepared.splits.test, 64, prepared.cache, desc="decode test")
    test_x, test_y = test_pixels.readable(prepared.splits.test.labels)
    val_loss, val_accuracy = along_the_line(model, start, end, torch.from_numpy(val_x), torch.from_numpy(val_y))
    test_balanced = []
    for alpha in ALPHAS:
        load_blend(model, start, end, alpha)
        predicted = predict_pixels(model, torch.from_numpy(test_x)).argmax(1).numpy()
        test_balanced.append(classification_metrics(test_y, predicted, prepared.classes)["balanced_accuracy"])
    return {"alphas": list(ALPHAS), "val_loss": val_loss, "val_accuracy": val_accuracy, "test_balanced": test_balanced,
            "epochs_run": len(tuned.history), "seconds": seconds, "val_images": int(len(val_y)),
            "config": dataclasses.asdict(config)}  # fmt: skip


def best_alpha_index(row: dict) -> int:
    from transferlab.trainer.interpolate import best_alpha

    return row["alphas"].index(best_alpha(row["alphas"], row["val_loss"], row["val_accuracy"]))


def auto_alpha_index(row: dict) -> int:
    """What ``--interpolate auto`` keeps (every class of these sets gives N validation images)."""
    from transferlab.trainer.interpolate import auto_alpha

    alpha, _ = auto_alpha(row["alphas"], row["val_loss"], row["val_accuracy"], row["config"]["samples_per_class"])
    return row["alphas"].index(alpha)


def rules(runs: dict[str, dict]) -> dict[str, float]:
    """Test balanced accuracy of each rule on one cell-seed (``runs``: by BatchNorm setting)."""
    scores = {}
    for bn, row in runs.items():
        scores[f"{bn}: none (alpha 1)"] = row["test_balanced"][-1]
        scores[f"{bn}: probe (alpha 0)"] = row["test_balanced"][0]
        for a in (0.5, 0.7, 0.8):
            scores[f"{bn}: fixed alpha {a}"] = row["test_balanced"][row["alphas"].index(a)]
        scores[f"{bn}: chosen on validation"] = row["test_balanced"][best_alpha_index(row)]
        scores[f"{bn}: auto (0.5 below 10 validation images per class)"] = row["test_balanced"][auto_alpha_index(row)]
        scores[f"{bn}: oracle alpha"] = max(row["test_balanced"])
    if len(runs) == 2:
        for rule in ("none (alpha 1)", "auto"):
            chosen = {}
            for bn, row in runs.items():
                i = len(row["alphas"]) - 1 if rule.startswith("none") else auto_alpha_index(row)
                chosen[bn] = (row["val_accuracy"][i], -row["val_loss"][i], row["test_balanced"][i])
            scores[f"BatchNorm chosen on validation: {rule}"] = max(chosen.values())[2]
    return scores


def report(out: Path) -> str:
    cells: dict[tuple, dict[str, list[float]]] = {}
    for path in sorted(out.glob("*.json")):
        data, size, seed, bn = path.stem.split("__")
        cells.setdefault((data, int(size), int(seed)), {})[bn] = json.loads(path.read_text())
    per_cell: dict[tuple, dict[str, list[float]]] = {}
    for (data, size, seed), runs in cells.items():
        if set(runs) != set(BATCHNORM):
            continue
        for rule, score in rules(runs).items():
            per_cell.setdefault((data, size), {}).setdefault(rule, []).append(score)
    if not per_cell:
        return "no finished cell yet"
    means = {cell: {rule: float(np.mean(v)) for rule, v in scores.items()} for cell, scores in per_cell.items()}
    names = list(next(iter(means.values())))
    best = {cell: max(m[r] for r in names if "oracle" not in r) for cell, m in means.items()}
    lines = [f"{len(means)} cells (data set x images per class; mean over seeds), flags: {FLAGS}", "",
             "| rule | mean test balanced accuracy | mean regret (points) | worst cell |", "|---|---|---|---|"]  # fmt: skip
    for rule in names:
        regrets = [100 * (best[c] - means[c][rule]) for c in means]
        lines.append(f"| {rule} | {np.mean([means[c][rule] for c in means]):.4f} | {np.mean(regrets):.2f} | "
                     f"{max(regrets):.2f} |")  # fmt: skip
    lines += ["", "regret: against the best non-oracle rule of the cell."]
    return "\n".join(lines)


def main() -> None:
    args = arguments(__doc__, "runs/interpolation", DATA, SEEDS, SIZES)
    if not args.report:
        for seed, size, data, (bn, freeze) in itertools.product(args.seeds, args.sizes, args.data, BATCHNORM.items()):
            record(args.out / f"{data}__{size}__{seed}__{bn}.json", lambda: run_cell(data, size, seed, freeze, args.cache_dir))
    print(report(args.out))


if __name__ == "__main__":
    main()
