"""Which fine-tuned network the ensemble should average with ``multicut``: ``finetune`` or another
(--member: ``finetune@all`` by default, or any option ``imbalanced.py`` ran, ``finetune+augment``).

For every folder ``imbalanced.py`` ran with ``--options ... multicut ensemble finetune MEMBER``, the
saved ``multicut`` and fine-tuned models predict the test images again and are averaged as
always-``ensemble`` averages them: ``multicut`` at the temperature the ensemble run saved, each
fine-tuned network at one fitted on its validation logits (as the ensemble fits its own, which
reproduces always-``ensemble`` to the last figure: the ``pair finetune`` column). Regret: points of
test balanced accuracy below the folder's best, the pairs counted among the options; an exact
sign-flip test over the data sets (seeds averaged first). Logits are cached in --out.

    cd benchmarks && python ensemble_member.py --runs ../runs/user-12b --out ../runs/ensemble-member --seeds 0 1 2 \\
        --data emoji-apple emoji-google emoji-twitter emoji-facebook emoji-fluent furniture cartoons
    cd benchmarks && python ensemble_member.py --runs ../runs/user-40d --member finetune+augment --out \\
        ../runs/ensemble-augmented --seeds 0 1 --data emoji-apple emoji-google emoji-twitter emoji-facebook emoji-fluent \\
        furniture cartoons

With --sizes (beside or instead of --runs), the cells of the study's colour pool (``transferlab study --pool
colour``: --sizes images per class to train on and as many to validate on, 100 a class to test,
112 px): always-``ensemble`` and ``finetune@all`` are trained on each (one JSON file per run in
--out; a rerun resumes), ``multicut`` and ``finetune`` scored by the ensemble's own members.

    cd benchmarks && python ensemble_member.py --sizes 10 5 30 --out ../runs/ensemble-member-study \\
        --cache-dir /tmp/study-cache --seeds 0
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
from pathlib import Path

import numpy as np
import torch
from combination_rules import prepared_run
from resumable import record

import transferlab as tl
from transferlab.advisor.study import COLOUR, paired_test_by_set, saved_outputs
from transferlab.ensemble import combined, fit_temperature
from transferlab.metrics import classification_metrics
from transferlab.strategies import STRATEGIES
from transferlab.trainer.loops import balanced_weights

REQUIRED = ("ensemble", "multicut", "finetune")  # beside the member compared; auto and head are scored where they ran
OPTIONAL = ("auto", "head")


def member_logits(runs: Path, folder: str, prepared, out: Path, other: str) -> dict[str, np.ndarray]:
    """Each member's validation and test logits (``name:split``), cached in ``out``."""
    saved = out / runs.name / f"{folder}-{other}.npz"
    if not saved.exists():
        saved.parent.mkdir(parents=True, exist_ok=True)
        logits = {}
        for member in ("multicut", "finetune", other):
            stage = saved_outputs(prepared, runs / "runs" / f"{folder}-{member}-table" / "model")
            logits.update({f"{member}:{split}": stage.logits[split].numpy() for split in ("val", "test")})
        np.savez(saved, **logits)
    return dict(np.load(saved))


def folder_scores(runs: Path, folder: str, out: Path, other: str) -> dict[str, float] | None:
    """Each option's and each pair's test balanced accuracy (points), or None where a run is missing."""
    results = {option: runs / f"{folder}-{option}-table.json" for option in (*REQUIRED, other, *OPTIONAL)}
    if not all(results[option].exists() for option in (*REQUIRED, other)):
        return None
    scores = {option: 100 * json.loads(path.read_text())["balanced_accuracy"] for option, path in results.items()
              if path.exists()}  # fmt: skip
    prepared = prepared_run(runs / "runs" / f"{folder}-ensemble-table")
    logits = member_logits(runs, folder, prepared, out, other)
    bundle = json.loads((runs / "runs" / f"{folder}-ensemble-table" / "model" / "bundle.json").read_text())
    temperatures = {m["folder"]: m["temperature"] for m in bundle["members"] if m["folder"] == "multicut"}
    val_labels = torch.from_numpy(prepared.splits.val.labels)
    by_class = balanced_weights(torch.from_numpy(prepared.splits.train.labels), len(prepared.classes),
                                STRATEGIES["ensemble"].class_weight)  # as the ensemble weighs them  # fmt: skip
    for tuned in ("finetune", other):
        temperatures[tuned] = fit_temperature(torch.from_numpy(logits[f"{tuned}:val"]), val_labels, by_class)
        pair = combined([torch.from_numpy(logits[f"{m}:test"]) for m in ("multicut", tuned)],
                        [temperatures[m] for m in ("multicut", tuned)])  # fmt: skip
        predicted = pair.numpy().argmax(1)
        scores[f"pair {tuned}"] = 100 * classification_metrics(prepared.splits.test.labels, predicted,
                                                               prepared.classes)["balanced_accuracy"]  # fmt: skip
    return scores


def pair_score(logits: dict[str, torch.Tensor], temperatures: dict[str, float], members: tuple[str, ...], prepared) -> float:
    predicted = combined([logits[m] for m in members], [temperatures[m] for m in members]).numpy().argmax(1)
    return 100 * classification_metrics(prepared.splits.test.labels, predicted, prepared.classes)["balanced_accuracy"]


def cell_scores(name: str, size: int, seed: int, out: Path, cache_dir: str | None) -> dict[str, float]:
    """A study cell: always-``ensemble`` and ``finetune@all`` trained (or read back), then each
    member alone and each pair scored on the test split."""
    base = {"data": name, "samples_per_class": size, "test_per_class": COLOUR.test_per_class, "seed": seed,
            "resolution": COLOUR.resolution, "cache_dir": cache_dir}  # fmt: skip
    runs = {"ensemble": {"strategy": "ensemble"}, "finetune@all": {"strategy": "finetune", "cut": "all"}}
    folders = {option: out / "runs" / f"{name}@{size}-seed{seed}-{option}" for option in runs}
    for option, options in runs.items():
        record(folders[option].with_suffix(".json"),
               functools.partial(_trained, {**base, **options, "out": str(folders[option])}))  # fmt: skip
    prepared = prepared_run(folders["ensemble"])
    bundle = json.loads((folders["ensemble"] / "model" / "bundle.json").read_text())
    models = {m["folder"]: folders["ensemble"] / "model" / m["folder"] for m in bundle["members"]}
    models["finetune@all"] = folders["finetune@all"] / "model"
    outputs = {member: saved_outputs(prepared, folder).logits for member, folder in models.items()}
    temperatures = {m["folder"]: m["temperature"] for m in bundle["members"]}
    temperatures["finetune@all"] = fit_temperature(outputs["finetune@all"]["val"], torch.from_numpy(prepared.splits.val.labels))
    test = {member: logits["test"] for member, logits in outputs.items()}
    scores = {member: pair_score(test, temperatures, (member,), prepared) for member in test}
    scores["ensemble"] = 100 * json.loads(folders["ensemble"].with_suffix(".json").read_text())["balanced_accuracy"]
    for tuned in ("finetune", "finetune@all"):
        scores[f"pair {tuned}"] = pair_score(test, temperatures, ("multicut", tuned), prepared)
    return scores


def _trained(options: dict) -> dict:
    result = tl.train(**options)
    return {"balanced_accuracy": result.metrics["balanced_accuracy"], "train_seconds": result.metrics.get("train_seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="*", default=[], help="imbalanced.py --out folders")
    parser.add_argument("--sizes", type=int, nargs="*", default=[], help="the study's colour cells at these sizes")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache-dir")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data", nargs="+", default=list(COLOUR.data))
    parser.add_argument("--member", default="finetune@all", help="with --runs: the fine-tuned option compared")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rows = {}  # keyed "set@where": the paired tests take the data sets as their units, pooling both sources
    for size in args.sizes:
        for name in args.data:
            for seed in args.seeds:
                rows[f"{name}@{size}#{seed}"] = cell_scores(name, size, seed, args.out, args.cache_dir)
        print_regrets(rows)
    for runs in args.runs:
        for name in args.data:
            for seed in args.seeds:
                if (scores := folder_scores(runs, f"{name}-seed{seed}", args.out, args.member)) is not None:
                    rows[f"{name}@{runs.name}#{seed}"] = scores
        print_regrets(rows, args.member)


def print_regrets(rows: dict[str, dict[str, float]], other: str = "finetune@all") -> None:
    columns = set.intersection(*(set(r) for r in rows.values()))  # the study's cells have no auto or head runs
    regrets = {cell: {c: max(r[k] for k in columns) - r[c] for c in r if c in columns} for cell, r in rows.items()}
    print(f"{len(regrets)} folders or cells; regret in points, mean / worst:")
    for column in next(iter(regrets.values())):
        values = [r[column] for r in regrets.values()]
        print(f"  {column}: {np.mean(values):.2f} / {np.max(values):.2f}")
    for rule, baseline in (("pair finetune", "ensemble"), (f"pair {other}", "pair finetune"),
                           (f"pair {other}", "multicut"), (f"pair {other}", "auto")):  # fmt: skip
        if baseline not in next(iter(regrets.values())) or rule not in next(iter(regrets.values())):
            continue
        test = paired_test_by_set(regrets, rule, baseline)
        print(f"{rule} against {baseline}: {test['mean_difference']:+.2f} points less regret over {test['sets']} "
              f"data sets (p = {test['p_value']:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
