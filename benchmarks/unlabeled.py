"""Unlabelled images for a frozen head (issue 24): what they add, with and without the guard.

Per cell (data set, labelled images per class, seed): the labelled subsample as `transferlab train
--strategy head --resolution 64 --samples-per-class N --test-per-class 100 --seed S` draws it,
and 100 images per class of the same training pool with their labels hidden (never the test
split, which is not in the pool). On the frozen final features, test balanced accuracy of:

* plain: the head on the labelled images alone (the run without --unlabeled);
* each pseudo-labelling method (label propagation, self-training) unguarded: always kept;
* each method guarded, as `--unlabeled` runs it: kept only when validation prefers it;

and the pseudo-labels' own accuracy against the hidden truth. Resumable: one JSON per cell in --out.

    python benchmarks/unlabeled.py --out runs/unlabeled --cache-dir /tmp/unlabeled-cache
    python benchmarks/unlabeled.py --out runs/unlabeled --report
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

DATA = ("fashion-mnist", "digits", "animal-mnist", "textures", "count", "orientation", "glyphs", "colour-shape")
SIZES = (5, 10)
SEEDS = (0, 1, 2)
HIDDEN_PER_CLASS = 100
FLAGS = "--strategy head --resolution 64 --test-per-class 100 --samples-per-class N --seed S"


def run_cell(data: str, size: int, seed: int, cache_dir: str | None) -> dict:
    import torch
    from torch import nn

    from transferlab.config import TrainConfig
    from transferlab.datasets import load_dataset
    from transferlab.features import cached_features
    from transferlab.metrics import classification_metrics
    from transferlab.prepare import prepare
    from transferlab.semisupervised import propagate, pseudo_labelled, self_training
    from transferlab.trainer.pseudo_labels import METHODS, fit_with_unlabeled
    from transferlab.trainer.stages import head_fitter, head_settings
    from transferlab.trainer.train import build_model
    from transferlab.unlabeled import hidden_labels

    config = TrainConfig(data=data, strategy="head", resolution=64, test_per_class=100, samples_per_class=size, seed=seed,
                         cache_dir=cache_dir)  # fmt: skip
    prepared = prepare(config)
    pool = load_dataset(data).train
    hidden = hidden_labels(pool, prepared.splits, HIDDEN_PER_CLASS, seed)
    order = np.argsort(pool.indices)
    truth = pool.labels[order[np.searchsorted(pool.indices[order], hidden.indices)]]
    model, cut = build_model(prepared, config)
    extractor = nn.Sequential(model.normalize, model.body)
    parts = {"weights": prepared.weights_digest, "cut": cut, "benchmark": "unlabeled"}
    started = time.perf_counter()
    features = {}
    for name, images in (("train", prepared.splits.train), ("val", prepared.splits.val), ("test", prepared.splits.test),
                         ("unlabeled", hidden)):  # fmt: skip
        values, _ = cached_features(extractor, parts, images, 64, prepared.cache, desc=name)
        features[name] = values.readable(images.labels)
    unlabeled_seconds = time.perf_counter() - started
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = features["train"], features["val"], features["test"]
    unlabeled_x = features["unlabeled"][0]
    classes = len(prepared.classes)
    fit = head_fitter(val_x, val_y, head_settings(config), None, None)

    def scored(head) -> float:
        head.eval()
        with torch.no_grad():
            predicted = head(torch.from_numpy(np.asarray(test_x))).argmax(1).numpy()
        return classification_metrics(test_y, predicted, prepared.classes)["balanced_accuracy"]

    def new_head():
        torch.manual_seed(seed)
        return build_model(prepared, config)[0].head

    result = {"config": {"data": data, "size": size, "seed": seed, "hidden_per_class": HIDDEN_PER_CLASS}}
    plain = new_head()
    tick = time.perf_counter()
    fit(plain, train_x, train_y)
    result["plain"] = scored(plain)
    result["plain_seconds"] = time.perf_counter() - tick
    with torch.no_grad():
        plain_probabilities = torch.softmax(plain(torch.from_numpy(np.asarray(unlabeled_x))), 1).numpy()
    for method in METHODS:
        pseudo = (propagate(train_x, train_y, unlabeled_x, classes) if method == "propagation"
                  else self_training(plain_probabilities))  # fmt: skip
        kept = pseudo_labelled(pseudo, classes)
        result[f"{method}: pseudo-label accuracy"] = float(np.mean(pseudo.labels[kept] == truth[kept])) if len(kept) else None
        unguarded = new_head()
        fit(unguarded, np.vstack([train_x, unlabeled_x[kept]]), np.concatenate([train_y, pseudo.labels[kept]]))
        result[f"{method}: unguarded"] = scored(unguarded)
        guarded = new_head()
        tick = time.perf_counter()
        _, report = fit_with_unlabeled(guarded, train_x, train_y, unlabeled_x, fit, classes, method=method)
        result[f"{method}: seconds"] = time.perf_counter() - tick
        result[f"{method}: guarded"] = scored(guarded)
        result[f"{method}: validation"] = {k: v for k, v in report.items() if k.startswith("val_")}
        lenient = report.get("val_accuracy_with", 0) >= report["val_accuracy_without"] and report.get(
            "val_loss_with", np.inf) < report["val_loss_without"]  # a tie in accuracy with a lower loss counts too
        result[f"{method}: lenient guard"] = result[f"{method}: unguarded"] if lenient else result["plain"]
    result["unlabeled_features_seconds"] = unlabeled_seconds
    return result


def report(out: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    if not rows:
        return "no finished cell yet"
    rules = [k for k in rows[0] if k == "plain" or k.endswith(("unguarded", "guarded", "guard"))]
    lines = [f"{len(rows)} runs, flags: {FLAGS}; {HIDDEN_PER_CLASS} unlabelled images per class", ""]
    for size in sorted({r["config"]["size"] for r in rows}):
        cells: dict[str, list[dict]] = {}
        for r in (r for r in rows if r["config"]["size"] == size):
            cells.setdefault(r["config"]["data"], []).append(r)
        lines += [f"### {size} labelled images per class ({len(cells)} data sets, mean over seeds)", "",
                  "| data | " + " | ".join(rules) + " | pseudo-label accuracy (propagation / self-training) |",
                  "|---" * (len(rules) + 2) + "|"]  # fmt: skip
        gains = {rule: [] for rule in rules}
        for data, runs in sorted(cells.items()):
            means = {rule: float(np.mean([r[rule] for r in runs])) for rule in rules}
            for rule in rules:
                gains[rule].append(100 * (means[rule] - means["plain"]))
            accuracy = [np.mean([r[f"{m}: pseudo-label accuracy"] or 0 for r in runs]) for m in ("propagation", "self-training")]
            lines.append(f"| {data} | " + " | ".join(f"{means[r]:.4f}" for r in rules) +
                         f" | {accuracy[0]:.3f} / {accuracy[1]:.3f} |")  # fmt: skip
        lines.append("| mean gain (points) | " + " | ".join(f"{np.mean(gains[r]):+.2f}" for r in rules) + " | |")
        lines.append("| worst cell (points) | " + " | ".join(f"{min(gains[r]):+.2f}" for r in rules) + " | |")
        lines.append("")
    seconds = {k: np.median([r[k] for r in rows]) for k in rows[0] if k.endswith("seconds")}
    lines.append("median seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/unlabeled")
    parser.add_argument("--cache-dir")
    parser.add_argument("--data", nargs="+", default=list(DATA))
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--report", action="store_true", help="only print the tables of the finished runs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.ERROR)
    if not args.report:
        for seed in args.seeds:
            for size in args.sizes:
                for data in args.data:
                    path = out / f"{data}__{size}__{seed}.json"
                    if not path.exists():
                        path.write_text(json.dumps(run_cell(data, size, seed, args.cache_dir)))
                        print(f"{path.stem}: done", flush=True)
    print(report(out))


if __name__ == "__main__":
    main()
