"""The default's final model: its members refitted on every labelled image (what ``auto`` does) or
the out-of-fold check's fold models kept as a bagged ensemble (issue 31, item 3).

For each run of ``benchmarks/default_on_own_images.py`` (its folder in ``--study``), the members the
out-of-fold check chose are trained again on each fold's rest - the check's own folds, splits and
settings (:mod:`transferlab.advisor.crossfit`) - and each fold model scores the run's test split;
the bagged ensemble is every (member, fold) model at the member's out-of-fold weight (shared by its
folds) and temperature. Set beside the refitted model's test balanced accuracy from the run's
``metrics.json``; the cost is networks per prediction (bagging: one per fold and member; refitting:
one per member) and no final training for bagging. One JSON file per run in ``--out``; a rerun
resumes.

    python benchmarks/bagged_or_refit.py --study runs/default-own/runs --out runs/bagged --sizes 5 10
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from resumable import arguments, record

from transferlab.advisor.crossfit import Candidate, fold_splits, labelled_folds
from transferlab.advisor.study import paired_test_by_set
from transferlab.config import TrainConfig
from transferlab.ensemble import combined
from transferlab.metrics import classification_metrics
from transferlab.prepare import prepare
from transferlab.strategies import ALL_CUTS, FINAL_CUT, STRATEGIES
from transferlab.trainer.train import fit_stages


def fold_test_logits(prepared, labelled, folds, config: TrainConfig) -> list[torch.Tensor]:
    """``config``'s candidate trained on each fold's rest (as the check trains it), its logits on
    the run's test split."""
    logits = []
    for fold in folds:
        splits = dataclasses.replace(fold_splits(labelled, fold, config), test=prepared.splits.test)
        with tempfile.TemporaryDirectory(prefix="bagged-") as scratch:
            _, _, stages = fit_stages(prepared.with_splits(splits), dataclasses.replace(config, out=scratch), Path(scratch))
        logits.append(list(stages.values())[-1].logits["test"].float())
    return logits


def run_cell(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    plan = json.loads((run_dir / "plan.json").read_text())
    base = TrainConfig(**{**metrics["config"], "backbone": plan["backbone"], "resolution": plan["resolution"]})
    prepared = prepare(base)
    labelled, folds = labelled_folds(prepared.splits, base.seed)
    started, member_logits, temperatures, weights = time.perf_counter(), [], [], []
    alone = {"candidate": plan["strategy"], "strategy": plan["strategy"], "cut": plan["cut"], "freeze_bn": plan["freeze_bn"],
             "augment": plan.get("augment"), "weight": 1.0, "temperature": 1.0}  # one candidate chosen: a plain run, bagged over its folds
    members = plan["members"] or [alone]
    for member in members:
        cut = None if member["cut"] in (FINAL_CUT, ALL_CUTS) else member["cut"]  # the strategy's own: its default
        freeze_bn = member["freeze_bn"] if STRATEGIES[member["strategy"]].trains_body else None
        candidate = Candidate(member["candidate"], member["strategy"], cut, freeze_bn, member.get("augment"))
        folds_logits = fold_test_logits(prepared, labelled, folds, candidate.config(base, run_dir / "unused"))
        member_logits += folds_logits
        temperatures += [member["temperature"]] * len(folds_logits)
        weights += [member["weight"] / len(folds_logits)] * len(folds_logits)
    bagged = combined(member_logits, temperatures, weights).argmax(1).numpy()
    labels = np.asarray(prepared.splits.test.labels)
    return {"cell": run_dir.name, "members": [m["candidate"] for m in members], "folds": len(folds),
            "refit": metrics["balanced_accuracy"],
            "bagged": classification_metrics(labels, bagged, prepared.classes)["balanced_accuracy"],
            "networks": {"refit": len(members), "bagged": len(member_logits)},
            "fold_seconds": time.perf_counter() - started}  # fmt: skip


def report(out: Path) -> str:
    rows = [json.loads(path.read_text()) for path in sorted(out.glob("*.json"))]
    lines = ["| run | members | refit | bagged | bagged - refit | networks (refit / bagged) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['cell']} | {', '.join(r['members'])} | {r['refit']:.4f} | {r['bagged']:.4f} "
                     f"| {100 * (r['bagged'] - r['refit']):+.2f} | {r['networks']['refit']} / {r['networks']['bagged']} |")  # fmt: skip
    if rows:
        scored = {r["cell"].rsplit("-seed", 1)[0]: {"refit": -100 * r["refit"], "bagged": -100 * r["bagged"]} for r in rows}
        test = paired_test_by_set(scored, "bagged", "refit")
        lines.append(f"\nbagged - refit over {len(rows)} runs: {np.mean([100 * (r['bagged'] - r['refit']) for r in rows]):+.2f} "
                     f"points of balanced accuracy on average; by data set p = {test['p_value']:.3f} ({test['sets']} sets)")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    args = arguments(__doc__, "runs/bagged", data=(), seeds=(0,), sizes=(5, 10), study="runs/default-own/runs")
    runs = Path(args.study)
    if not args.report:
        for run_dir in sorted(p for p in runs.iterdir() if (p / "plan.json").exists() and (p / "metrics.json").exists()):
            data, rest = run_dir.name.rsplit("@", 1)
            size, seed = (int(part) for part in rest.split("-seed"))
            if (args.data and data not in args.data) or seed not in args.seeds or size not in args.sizes:
                continue
            record(args.out / f"{run_dir.name}.json", functools.partial(run_cell, run_dir))
    print(report(args.out))


if __name__ == "__main__":
    main()
