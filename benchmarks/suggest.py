"""Which images `transferlab suggest` should pick (issue 24): each selection against random ones.

Per cell (data set, seed; see frozen_cells.py): a head on 5 labelled images per class, then 10
images per class more picked from 100 unlabelled images per class by each selection (their
labels revealed from the pool's truth, as a person labelling them would), the head refitted on
all; test balanced accuracy. The baselines: 10 x classes images drawn at random, and 10 drawn at
random from each class (which needs the labels a user does not have). Resumable: one JSON per cell.

    python benchmarks/suggest.py --out runs/suggest --cache-dir /tmp/unlabeled-cache
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
from frozen_cells import FLAGS, frozen_cell
from resumable import arguments, record

DATA = ("fashion-mnist", "digits", "animal-mnist", "textures", "count", "orientation", "glyphs", "colour-shape")
SEEDS = (0, 1, 2)
START, ADDED = 5, 10  # labelled images per class before, picked per class after


def run_cell(data: str, seed: int, cache_dir: str | None) -> dict:
    import torch

    from transferlab.selection import SELECTIONS, select

    cell = frozen_cell(data, START, seed, cache_dir)
    (train_x, train_y), unlabeled_x, truth = cell.features["train"], cell.features["unlabeled"][0], cell.truth
    start = cell.new_head()
    cell.fit(start, train_x, train_y)
    with torch.no_grad():
        probabilities = torch.softmax(start(torch.from_numpy(np.asarray(unlabeled_x))), 1).numpy()
    budget = ADDED * cell.classes
    rng = np.random.default_rng(seed)
    picks = {method: select(unlabeled_x, probabilities, budget, method, seed) for method in SELECTIONS}
    picks["random per class"] = np.concatenate([rng.permutation(np.flatnonzero(truth == c))[:ADDED]
                                                for c in range(cell.classes)])  # fmt: skip
    result = {"config": {"data": data, "seed": seed, "start": START, "added": ADDED}, "start": cell.scored(start)}
    for name, rows in picks.items():
        head = cell.new_head()
        cell.fit(head, np.vstack([train_x, unlabeled_x[rows]]), np.concatenate([train_y, truth[rows]]))
        result[name] = cell.scored(head)
        result[f"{name}: classes covered"] = int(len(np.unique(truth[rows])))
    return result


def report(out: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    if not rows:
        return "no finished cell yet"
    rules = ["start", "random", "random per class", "margin", "kcenter", "badge"]
    cells: dict[str, list[dict]] = {}
    for r in rows:
        cells.setdefault(r["config"]["data"], []).append(r)
    lines = [f"{len(rows)} runs, flags: {FLAGS} with N={START}, then {ADDED} per class picked; mean over seeds", "",
             "| data | " + " | ".join(rules) + " |", "|---" * (len(rules) + 1) + "|"]  # fmt: skip
    gains = {rule: [] for rule in rules}
    for data, runs in sorted(cells.items()):
        means = {rule: float(np.mean([r[rule] for r in runs])) for rule in rules}
        for rule in rules:
            gains[rule].append(100 * (means[rule] - means["random per class"]))
        lines.append(f"| {data} | " + " | ".join(f"{means[r]:.4f}" for r in rules) + " |")
    lines.append("| mean against random per class (points) | " + " | ".join(f"{np.mean(gains[r]):+.2f}" for r in rules) + " |")
    lines.append("| worst cell | " + " | ".join(f"{min(gains[r]):+.2f}" for r in rules) + " |")
    return "\n".join(lines)


def main() -> None:
    args = arguments(__doc__, "runs/suggest", DATA, SEEDS)
    if not args.report:
        for seed, data in itertools.product(args.seeds, args.data):
            record(args.out / f"{data}__{seed}.json", lambda: run_cell(data, seed, args.cache_dir))
    print(report(args.out))


if __name__ == "__main__":
    main()
