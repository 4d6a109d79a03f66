"""The multicut head: trained (AdamW on the standardized taps, early stopping on validation: the
recipe before 2026-12-01) against computed (ridge at the strength of the best leave-one-out
accuracy: issue 22's recipe, what ``multicut`` runs now), on the study's cells up to 30 images per
class, each against the best frozen head on one cut.

Per seed of the study: the multicut stage as `--strategy multicut` runs it (its features from the
feature cache the study filled; its own head is the computed one), then on the same standardized
features a head trained by ``trained_head.fit_head`` with the run's settings, and the computed head fitted
on training and validation images together. Balanced accuracy on the test split; per cell, means
over seeds; the best of ``head`` and ``truncate`` at every cut is read from the study's records
(max over runs of their means over seeds, the study's definition).

    python benchmarks/multicut_head.py --study runs/study --cache-dir /tmp/study-cache
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np


def balanced(labels: np.ndarray, predictions: np.ndarray, classes: int) -> float:
    recalls = [np.mean(predictions[labels == k] == k) for k in range(classes) if np.any(labels == k)]
    return float(np.mean(recalls))


def seed_result(data: str, size: int, seed: int, study: Path, cache: str | None) -> dict:
    from transferlab.advisor.study import FULL, _base_config, _option_configs, run_key
    from transferlab.heads import make_head
    from transferlab.prepare import prepare
    from transferlab.transferability import ridge_classifier, tap_standardization
    from transferlab.strategies import ALL_CUTS
    from transferlab.trainer.context import RunContext
    from transferlab.trainer.stages import STAGES
    from transferlab.trainer.train import build_model
    from trained_head import fit_head, trained_head_settings

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
    result = {"computed": balanced(stage.labels["test"], stage.logits["test"].argmax(1).numpy(), classes)}
    mean, scale = tap_standardization(train_x, widths)
    torch.manual_seed(config.seed)  # the head's initial weights as build_model draws them
    trained = make_head(sum(widths), classes, config.head_init, config.dropout)
    fit_head(trained, (np.asarray(train_x) - mean) / scale, train_y, (np.asarray(val_x) - mean) / scale, val_y,
             trained_head_settings(config))  # fmt: skip
    with torch.no_grad():
        logits = trained(torch.from_numpy(((np.asarray(test_x) - mean) / scale).astype(np.float32)))
    result["trained"] = balanced(test_y, logits.argmax(1).numpy(), classes)
    x, y = np.vstack([train_x, val_x]), np.concatenate([train_y, val_y])
    mean, scale = tap_standardization(x, widths)
    ridge = ridge_classifier((x - mean) / scale, y, classes)
    predictions = (((np.asarray(test_x) - mean) / scale) @ ridge.weights + ridge.bias).argmax(1)
    result["computed, train + val"] = balanced(test_y, predictions, classes)
    result["runs"] = {run.name: json.loads((run / "study-run.json").read_text())["result"]["balanced_accuracy"]
                      for run in folder.iterdir() if (run / "study-run.json").exists()}  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="runs/study")
    parser.add_argument("--cache-dir")
    parser.add_argument("--out", default="runs/multicut-head.json", help="finished seeds, reused when resumed")
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
    heads = ("trained", "computed", "computed, train + val")
    cells: dict[str, list[dict]] = {}
    for key, result in done.items():
        cells.setdefault(key.split("/")[0], []).append(result)
    print("| cell | best frozen head on one cut | " + " | ".join(heads) + " |\n" + "|---" * (len(heads) + 2) + "|")
    within = dict.fromkeys(heads, 0)
    for cell, results in cells.items():
        frozen = [k for k in results[0]["runs"] if k.startswith(("head-", "truncate-"))]
        best = max(np.mean([r["runs"][k] for r in results]) for k in frozen)
        means = {h: np.mean([r[h] for r in results]) for h in heads}
        for head in heads:
            within[head] += 100 * (best - means[head]) <= 1.0
        print(f"| {cell} | {best:.3f} | " + " | ".join(f"{means[h]:.3f}" for h in heads) + " |")
    print("\nwithin 1 point of the best frozen head: " + ", ".join(f"{h} {within[h]} of {len(cells)}" for h in heads))
    print("the computed head here against the study's multicut runs, largest difference: "
          f"{max(abs(r['computed'] - r['runs']['multicut-all']) for r in done.values()):.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
