"""Proof of `transferlab rank` on the data-set pool: does its top pick fine-tune best?

For every cell (a built-in data set at a training size), every offline ImageNet backbone is
ranked (probe accuracy, LogME, LEEP on a per-class sample) and then fine-tuned (the advisor's
recipe: linear probe, then the whole network with frozen BatchNorm statistics) at one common
resolution. Per cell: the weighted Kendall tau of each score against the fine-tuned balanced
accuracy, whether the top pick is within 1 point of the best backbone, the same for "always the
biggest model", and what ranking cost against fine-tuning every candidate.

Resumable: every finished ranking and fine-tuning run is recorded under --out and reused.

    python benchmarks/rank_pool.py --out runs/rank-pool --cache-dir /tmp/rank-cache
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import weightedtau

import transferlab as tl
from transferlab.offline import OFFLINE_BACKBONES

POOL = ("fashion-mnist", "digits", "animal-mnist", "textures", "faces", "count", "orientation", "glyphs", "colour-shape")
SIZES = (10, 100)
RESOLUTION = 64
TEST_PER_CLASS = 100
BIGGEST = "efficientnet_lite2"
SCORES = ("probe_accuracy", "logme", "leep")


def _recorded(path: Path, compute):
    if path.exists():
        return json.loads(path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    result = compute()
    path.write_text(json.dumps(result, indent=2))
    return result


def _options(data: str, per_class: int, cache_dir: str | None) -> dict:
    return {"samples_per_class": per_class, "test_per_class": TEST_PER_CLASS, "resolution": RESOLUTION,
            "cache_dir": cache_dir}  # fmt: skip


def run_cell(data: str, per_class: int, out: Path, cache_dir: str | None) -> dict:
    cell = out / f"{data}@{per_class}"
    options = _options(data, per_class, cache_dir)

    def ranking():
        started = time.perf_counter()
        ranked = tl.rank(data, OFFLINE_BACKBONES, **options)
        return {"seconds": time.perf_counter() - started, "scores": ranked.to_json()}

    ranked = _recorded(cell / "ranking.json", ranking)
    tuned = {}
    for backbone in OFFLINE_BACKBONES:
        def finetune(backbone=backbone):
            started = time.perf_counter()
            metrics = tl.train(data, strategy="finetune", backbone=backbone, freeze_bn=True, out=str(cell / backbone),
                               **options).metrics  # fmt: skip
            return {"balanced_accuracy": metrics["balanced_accuracy"], "seconds": time.perf_counter() - started}

        tuned[backbone] = _recorded(cell / backbone / "result.json", finetune)
    return summarize(f"{data}@{per_class}", ranked, tuned)


def summarize(name: str, ranked: dict, tuned: dict) -> dict:
    scores = {s["backbone"]: s for s in ranked["scores"]}
    accuracy = {b: tuned[b]["balanced_accuracy"] for b in OFFLINE_BACKBONES}
    best = max(accuracy.values())
    top = ranked["scores"][0]["backbone"]
    taus = {}
    for score in SCORES:
        values = [scores[b][score] for b in OFFLINE_BACKBONES]
        if any(v is None for v in values) or len(set(values)) == 1 or len(set(accuracy.values())) == 1:
            taus[score] = None  # ties everywhere: no order to compare
            continue
        taus[score] = float(weightedtau(values, [accuracy[b] for b in OFFLINE_BACKBONES]).statistic)
    return {
        "cell": name, "accuracy": accuracy, "top_pick": top, "best": max(accuracy, key=accuracy.get),
        "top_within_1_point": 100 * (best - accuracy[top]) <= 1.0,
        "biggest_within_1_point": 100 * (best - accuracy[BIGGEST]) <= 1.0,
        "weighted_tau": taus, "rank_seconds": ranked["seconds"],
        "finetune_seconds": sum(tuned[b]["seconds"] for b in OFFLINE_BACKBONES),
    }  # fmt: skip


def table(cells: list[dict]) -> str:
    lines = ["| cell | fine-tuned balanced accuracy (Lite0 / Lite1 / Lite2 / MobileNetV2) | top pick | within 1 pt "
             "| biggest within 1 pt | tau probe | tau LogME | tau LEEP | rank / fine-tune all |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for c in cells:
        acc = " / ".join(f"{c['accuracy'][b]:.3f}" for b in OFFLINE_BACKBONES)
        tau = [f"{c['weighted_tau'][s]:+.2f}" if c["weighted_tau"][s] is not None else "tie" for s in SCORES]
        lines.append(f"| {c['cell']} | {acc} | {c['top_pick']} | {'yes' if c['top_within_1_point'] else 'no'} | "
                     f"{'yes' if c['biggest_within_1_point'] else 'no'} | {' | '.join(tau)} | "
                     f"{c['rank_seconds'] / c['finetune_seconds']:.1%} |")  # fmt: skip
    hits = np.mean([c["top_within_1_point"] for c in cells])
    biggest = np.mean([c["biggest_within_1_point"] for c in cells])
    means = {s: np.mean([c["weighted_tau"][s] for c in cells if c["weighted_tau"][s] is not None] or [np.nan]) for s in SCORES}
    cost = max(c["rank_seconds"] / c["finetune_seconds"] for c in cells)
    lines.append(f"\n{len(cells)} cells: top pick within 1 point of the best in {hits:.0%} (always {BIGGEST}: "
                 f"{biggest:.0%}); mean weighted tau probe {means['probe_accuracy']:+.2f}, LogME {means['logme']:+.2f}, "
                 f"LEEP {means['leep']:+.2f}; ranking cost at most {cost:.1%} of fine-tuning every candidate.")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/rank-pool")
    parser.add_argument("--cache-dir")
    parser.add_argument("--data", nargs="+", default=list(POOL))
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    args = parser.parse_args()
    out = Path(args.out)
    cells = []
    for data in args.data:
        for per_class in args.sizes:
            cells.append(run_cell(data, per_class, out, args.cache_dir))
            (out / "summary.json").write_text(json.dumps(cells, indent=2))
            print(table(cells).splitlines()[-1], flush=True)
    print(table(cells))


if __name__ == "__main__":
    main()
