"""The default with unlabelled images (issue 31, item 6): what ``--unlabeled`` adds to whatever
``auto`` trains, at 5 and 10 labelled images per class.

For each run of ``benchmarks/default_on_own_images.py`` on a single-style colour set (the same data
flags: ``--resolution 112 --samples-per-class N --test-per-class 100 --seed S``), the default runs
again with ``--unlabeled FOLDER``: 100 images per class of the same training pool that are in
neither its training nor its validation split, written as files with their labels hidden
(``transferlab.unlabeled.hidden_labels``, as the study and the frozen-head benchmark draw them).
Its test balanced accuracy is set beside the run without them. By default the single-style sets
only: a cross-style set's unlabelled images would rather come from the style it is tested on. One JSON file per run in
--out; a rerun resumes.

    python benchmarks/default_unlabeled.py --study runs/default-own --out runs/default-unlabeled \\
        --cache-dir /tmp/study-cache --sizes 5 10 --seeds 0
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

from frozen_cells import HIDDEN_PER_CLASS
from resumable import arguments, record

import transferlab as tl
from transferlab.advisor.study import paired_test_by_set
from transferlab.config import TrainConfig
from transferlab.datasets import load_dataset
from transferlab.prepare import prepare
from transferlab.unlabeled import hidden_labels

SINGLE_STYLE = ("emoji-apple", "emoji-google", "emoji-twitter", "emoji-facebook", "emoji-fluent", "furniture", "cartoons")


def run_cell(data: str, size: int, seed: int, out: Path, cache_dir: str | None) -> dict:
    flags = {"resolution": 112, "samples_per_class": size, "test_per_class": 100, "seed": seed, "cache_dir": cache_dir}
    prepared = prepare(TrainConfig(data=data, **flags))  # the splits the default's run draws
    hidden = hidden_labels(load_dataset(data).train, prepared.splits, HIDDEN_PER_CLASS, seed)
    with tempfile.TemporaryDirectory(prefix="unlabeled-") as folder:
        for i in range(len(hidden)):
            hidden.open(i).convert("RGB").save(Path(folder) / f"{i:05d}.png")
        result = tl.train(data, unlabeled=folder, out=str(out), **flags)
    crossfit = (result.plan.crossfit or {}) if result.plan else {}
    return {"balanced_accuracy": result.metrics["balanced_accuracy"], "unlabeled": len(hidden),
            "strategy": result.plan.strategy, "members": list(result.plan.members), "reason": crossfit.get("reason")}


def report(args) -> str:
    lines = ["| cell | without | with unlabelled images | difference | the default's choice with them |", "|---|---|---|---|---|"]
    scored = {}
    for path in sorted(args.out.glob("*.json")):
        cell, seed = path.stem.rsplit("-seed", 1)
        without = json.loads((args.study / path.name).read_text())["balanced_accuracy"]
        found = json.loads(path.read_text())
        members = ", ".join(f"{m['candidate']} {m['weight']:.2f}" for m in found["members"]) or found["strategy"]
        lines.append(f"| {cell} | {without:.4f} | {found['balanced_accuracy']:.4f} "
                     f"| {100 * (found['balanced_accuracy'] - without):+.2f} | {members} |")  # fmt: skip
        scored[cell] = {"with": -100 * found["balanced_accuracy"], "without": -100 * without}
    if scored:
        test = paired_test_by_set(scored, "with", "without")
        lines.append(f"\nwith - without over {len(scored)} runs: {test['mean_difference']:+.2f} points of balanced accuracy "
                     f"on average (by data set p = {test['p_value']:.3f}, {test['sets']} sets)")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    args = arguments(__doc__, "runs/default-unlabeled", data=SINGLE_STYLE, seeds=(0,), sizes=(5, 10), study="runs/default-own")
    args.study = Path(args.study)
    if not args.report:
        for size in args.sizes:
            for data in args.data:
                for seed in args.seeds:
                    name = f"{data}@{size}-seed{seed}"
                    if (args.study / f"{name}.json").exists():  # the run without them, to compare with
                        record(args.out / f"{name}.json", functools.partial(run_cell, data, size, seed,
                                                                            args.out / "runs" / name, args.cache_dir))  # fmt: skip
    print(report(args))


if __name__ == "__main__":
    main()
