"""The multicut head: today's (AdamW on the standardized taps, early stopping on validation) against
a ridge head whose strength is chosen by the closed-form leave-one-out (issue 22's recipe), on the
study's cells up to 30 images per class, each against the best frozen head on one cut.

Per seed of the study (its multicut run's features, read from the feature cache the study filled):
the multicut stage as `--strategy multicut` runs it, then on the same standardized features a
ridge classifier (one-hot targets, the penalty of the best leave-one-out accuracy among
``signals.RIDGE_PENALTIES``) fitted on the training split alone, and on training and validation
together. Balanced accuracy on the test split; per cell, means over seeds; the gap to the best of
``head`` and ``truncate`` at every cut is read from the study's records. Nothing in the product
changes: this measures whether the recipe would meet the goal (within 1 point in 80% of cells).

    python benchmarks/multicut_head.py --study runs/study --cache-dir /tmp/study-cache
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np


def ridge_loo_head(x: np.ndarray, y: np.ndarray, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(weights, bias) of the ridge classifier on ``x`` at the penalty of the best exact
    leave-one-out accuracy (ties: the stronger penalty)."""
    from transferlab.signals import RIDGE_PENALTIES, left_singular

    mean = x.mean(0)
    centred = np.hstack([x - mean, np.ones((len(x), 1))])
    target = np.eye(classes)[y]
    u, s2 = left_singular(centred)
    projected = u.T @ target
    best = None
    for penalty in RIDGE_PENALTIES:
        shrink = s2 / (s2 + penalty * np.sum(s2) / min(centred.shape))
        fitted = u @ (shrink[:, None] * projected)
        hat = np.einsum("ij,j,ij->i", u, shrink, u)
        left_out = (fitted - hat[:, None] * target) / np.maximum(1 - hat, 1e-9)[:, None]
        accuracy = float(np.mean(left_out.argmax(1) == y))
        if best is None or accuracy >= best[0]:
            best = (accuracy, penalty)
    lam = best[1] * np.sum(s2) / min(centred.shape)
    # weights in the feature space: W = X^T U diag(1 / (s2 + lam)) U^T Y
    coefficients = centred.T @ (u @ ((1 / (s2 + lam))[:, None] * projected))
    weights, bias = coefficients[:-1], coefficients[-1]
    return weights, bias - mean @ weights


def balanced(labels: np.ndarray, predictions: np.ndarray, classes: int) -> float:
    recalls = [np.mean(predictions[labels == k] == k) for k in range(classes) if np.any(labels == k)]
    return float(np.mean(recalls))


def seed_result(data: str, size: int, seed: int, study: Path, cache: str | None) -> dict:
    from transferlab.advisor.study import FULL, _base_config, _option_configs, run_key
    from transferlab.prepare import prepare
    from transferlab.signals import tap_standardization
    from transferlab.strategies import ALL_CUTS
    from transferlab.trainer.stages import STAGES, RunContext
    from transferlab.trainer.train import build_model

    folder = study / f"{data}@{size}" / f"seed{seed}"
    cuts = [e["cut"] for e in json.loads((folder / "measurements.json").read_text())["result"]["measurements"]["evidence"]]
    base = _base_config(data, size, seed, FULL, cache)
    config = _option_configs(base, cuts, FULL, Path("/tmp/multicut-head"))[run_key("multicut", ALL_CUTS)]
    prepared = prepare(config)
    import torch

    torch.manual_seed(config.seed)
    model, cut = build_model(prepared, config)
    stage = STAGES["multicut"](model, prepared, cut, config, RunContext(Path(config.out)))
    classes = len(prepared.classes)
    widths = [p.channels for p in prepared.backbone.cut_points]
    rows = {s: f.readable(getattr(prepared.splits, s).labels) for s, f in stage.inputs.items()}
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (rows[s] for s in ("train", "val", "test"))
    result = {"today": balanced(stage.labels["test"], stage.logits["test"].argmax(1).numpy(), classes)}
    for name, (x, y) in {"ridge": (train_x, train_y),
                         "ridge, train + val": (np.vstack([train_x, val_x]), np.concatenate([train_y, val_y]))}.items():  # fmt: skip
        mean, scale = tap_standardization(x, widths)
        weights, bias = ridge_loo_head((np.asarray(x) - mean) / scale, y, classes)
        predictions = (((np.asarray(test_x) - mean) / scale) @ weights + bias).argmax(1)
        result[name] = balanced(test_y, predictions, classes)
    runs = {}
    for run in folder.iterdir():
        record = run / "study-run.json"
        if record.exists():
            runs[run.name] = json.loads(record.read_text())["result"]["balanced_accuracy"]
    result["best frozen"] = max(v for k, v in runs.items() if k.startswith(("head-", "truncate-")))
    result["recorded"] = runs["multicut-all"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="runs/study")
    parser.add_argument("--cache-dir")
    parser.add_argument("--out", default="runs/multicut-head.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    from transferlab.advisor.study import FULL, SEEDED_SIZES

    out = Path(args.out)
    done = json.loads(out.read_text()) if out.exists() else {}
    for size in (s for s in FULL.sizes if s <= SEEDED_SIZES):
        for data in FULL.data:
            for seed in FULL.seeds:
                key = f"{data}@{size}/{seed}"
                if key not in done:
                    done[key] = seed_result(data, size, seed, Path(args.study), args.cache_dir)
                    out.write_text(json.dumps(done, indent=1))
    heads = ("today", "ridge", "ridge, train + val")
    cells: dict[str, list[dict]] = {}
    for key, result in done.items():
        cells.setdefault(key.split("/")[0], []).append(result)
    print("| cell | best frozen | " + " | ".join(heads) + " |\n|---" * 1 + "|---" * (len(heads) + 1) + "|")
    within = dict.fromkeys(heads, 0)
    for cell, results in cells.items():
        means = {k: np.mean([r[k] for r in results]) for k in ("best frozen", *heads)}
        for head in heads:
            within[head] += 100 * (means["best frozen"] - means[head]) <= 1.0
        print(f"| {cell} | {means['best frozen']:.3f} | " + " | ".join(f"{means[h]:.3f}" for h in heads) + " |")
    print("\nwithin 1 point of the best frozen head: " + ", ".join(f"{h} {within[h]} of {len(cells)}" for h in heads))
    print("today's head rerun here against the study's record, largest difference: "
          f"{max(abs(r['today'] - r['recorded']) for r in done.values()):.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
