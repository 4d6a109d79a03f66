"""Unlabelled images for a frozen head (issue 24): what they add, with and without the guard.

Per cell (data set, labelled images per class, seed; see frozen_cells.py): the labelled subsample
and 100 images per class of the same training pool with their labels hidden. On the frozen final
features, test balanced accuracy of:

* plain: the head on the labelled images alone (the run without --unlabeled: its closed-form head
  fits the validation images too);
* each pseudo-labelling method (label propagation, self-training) unguarded: always kept;
* each method guarded, as `--unlabeled` runs it: kept only when validation prefers it (the two
  fits on the training split alone, the kept one fitted again with the validation images);

and the pseudo-labels' own accuracy against the hidden truth. Resumable: one JSON per cell in --out.

    python benchmarks/unlabeled.py --out runs/unlabeled --cache-dir /tmp/unlabeled-cache
    python benchmarks/unlabeled.py --out runs/unlabeled --report
"""

from __future__ import annotations

import functools
import itertools
import json
import time
from pathlib import Path

import numpy as np
from frozen_cells import FLAGS, HIDDEN_PER_CLASS, frozen_cell
from resumable import arguments, record

DATA = ("fashion-mnist", "digits", "animal-mnist", "textures", "count", "orientation", "glyphs", "colour-shape")
SIZES = (5, 10)
SEEDS = (0, 1, 2)


def run_cell(data: str, size: int, seed: int, cache_dir: str | None) -> dict:
    import torch

    from transferlab.semisupervised import propagate, pseudo_labelled, self_training
    from transferlab.trainer.pseudo_labels import METHODS, fit_with_unlabeled, labelled_weight

    started = time.perf_counter()
    cell = frozen_cell(data, size, seed, cache_dir)
    features_seconds = time.perf_counter() - started
    (train_x, train_y), unlabeled_x, truth = cell.features["train"], cell.features["unlabeled"][0], cell.truth
    result = {"config": {"data": data, "size": size, "seed": seed, "hidden_per_class": HIDDEN_PER_CLASS}}
    plain = cell.new_head()
    tick = time.perf_counter()
    cell.fit(plain, train_x, train_y, fit_val=True)
    result["plain"] = cell.scored(plain)
    result["plain_seconds"] = time.perf_counter() - tick
    plain, embed = cell.new_head(), cell.embed()
    cell.fit(plain, train_x, train_y)  # the guard's head without them: the training split alone
    with torch.no_grad():
        plain_probabilities = torch.softmax(plain(torch.from_numpy(np.asarray(unlabeled_x))), 1).numpy()
    for method in METHODS:
        pseudo = (propagate(embed(train_x), train_y, embed(unlabeled_x), cell.classes) if method == "propagation"
                  else self_training(plain_probabilities))  # fmt: skip
        kept = pseudo_labelled(pseudo, cell.classes)
        result[f"{method}: pseudo-label accuracy"] = float(np.mean(pseudo.labels[kept] == truth[kept])) if len(kept) else None
        unguarded = cell.new_head()
        repeat = labelled_weight(len(train_x), len(kept))
        cell.fit(unguarded, np.vstack([np.repeat(train_x, repeat, 0), unlabeled_x[kept]]),
                 np.concatenate([np.repeat(train_y, repeat), pseudo.labels[kept]]), fit_val=True)  # fmt: skip
        result[f"{method}: unguarded"] = cell.scored(unguarded)
        guarded = cell.new_head()
        tick = time.perf_counter()
        _, report = fit_with_unlabeled(guarded, train_x, train_y, unlabeled_x, cell.fit, cell.classes, embed, method,
                                       functools.partial(cell.fit, fit_val=True))  # fmt: skip
        result[f"{method}: seconds"] = time.perf_counter() - tick
        result[f"{method}: guarded"] = cell.scored(guarded)
        result[f"{method}: validation"] = {k: v for k, v in report.items() if k.startswith("val_")}
        lenient = report.get("val_accuracy_with", 0) >= report["val_accuracy_without"] and report.get(
            "val_loss_with", np.inf) < report["val_loss_without"]  # a tie in accuracy with a lower loss counts too
        result[f"{method}: lenient guard"] = result[f"{method}: unguarded"] if lenient else result["plain"]
    result["features_seconds"] = features_seconds
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
    args = arguments(__doc__, "runs/unlabeled", DATA, SEEDS, SIZES)
    if not args.report:
        for seed, size, data in itertools.product(args.seeds, args.sizes, args.data):
            record(args.out / f"{data}__{size}__{seed}.json", lambda: run_cell(data, size, seed, args.cache_dir))
    print(report(args.out))


if __name__ == "__main__":
    main()
