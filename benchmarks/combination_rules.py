"""Rules for turning out-of-fold evidence into a choice, replayed without training anything.

Every run of ``default_on_own_images.py`` left its candidates' out-of-fold logits in the cache
(``CACHE/crossfit/<images>/<candidate>/fold-<i>.npz``). Each rule here reads them and picks either
one candidate alone or the reference (the table's equal-weight ensemble); the study's run of that
choice on the same split gives its test score. Rules: ``single by log loss @ c`` (the best single
candidate by out-of-fold log loss replaces the reference where a paired bootstrap favours it in a
share ``c`` of the draws), ``single by accuracy @ c`` (the same on accuracy); ``leave one set out``
picks, for each data set, the rule of least mean regret on the other sets and scores it on that
one. Beside them: the check as shipped (its own trained result) and the always-rules. Regret:
points of test balanced accuracy below the study's best option of the cell (negative where the
check beat them all). Candidates the study did not train alone (``finetune-adapted-bn``) are left
out of the rules' choices.

The second table asks which members the reference should have: every finished seed of the study,
its saved ``head``, ``finetune`` and ``multicut`` models' test logits (temperatures on validation, as
always-``ensemble`` fits them) averaged in pairs and all three, regret against the study's best
option, and a paired test over data sets against today's pair. The third asks whether the
ensemble's temperatures should come from the out-of-fold predictions (as shipped) or from the
final members' validation images (as always-``ensemble`` fits them): the default's own trained
members, their test logits combined both ways - and, to measure how far calibration could move the
ensemble at all, with temperatures fitted on the test split itself (an oracle, never a rule).
``--default`` is a ``default_on_own_images.py --out`` folder or an ``imbalanced.py --out`` one.

    python benchmarks/combination_rules.py --study runs/study-colour --default runs/default-own \\
        --cache-dir /tmp/study-cache
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from default_on_own_images import study_runs

from transferlab.advisor.combine import bootstrap_share, image_losses, log_softmax, mixture, normalized
from transferlab.advisor.crossfit import labelled_folds
from transferlab.advisor.study import always, paired_test_by_set, saved_outputs
from transferlab.config import TrainConfig
from transferlab.ensemble import combined, fit_temperature
from transferlab.metrics import classification_metrics
from transferlab.prepare import prepare
from transferlab.strategies import STRATEGIES

CONFIDENCES = (0.5, 0.7, 0.8, 0.9)
REFERENCE = "ensemble"
SEED = 0  # the seed of the default's runs replayed (default_on_own_images.py --seeds 0)


def study_folder(candidate: str) -> str | None:
    """The study's run folder of a candidate trained alone (None: the study has no such run)."""
    strategy = candidate.split("@")[0]
    if strategy not in STRATEGIES:
        return None
    key = candidate if "@" in candidate else always(strategy)
    return key.replace("@", "-", 1)


def prepared_run(run: Path):
    """A finished run's data, split as it was (its saved config; nothing is written)."""
    saved = json.loads((run / "metrics.json").read_text())["config"]
    # --augment applies to the trained options only; the split does not depend on it
    fields = {k: v for k, v in saved.items() if k in TrainConfig.__dataclass_fields__ and k != "augment"}
    return prepare(TrainConfig(**{**fields, "strategy": "auto"}))  # auto takes every flag


def raw_out_of_fold(prepared, seed: int, cache_dir: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each candidate's out-of-fold logits (those that ran every fold) and the labels, as the
    check of the run of ``seed`` left them in the cache."""
    labelled, folds = labelled_folds(prepared.splits, seed)
    root = cache_dir / "crossfit" / labelled.fingerprint()
    found, labels = {}, None
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        files = [folder / f"fold-{i}.npz" for i in range(len(folds))]
        if not all(f.exists() for f in files):
            continue  # raced out after the first fold
        records = [np.load(f) for f in files]
        found[folder.name] = np.concatenate([r["logits"] for r in records]).astype(np.float64)
        labels = np.concatenate([r["labels"] for r in records])
    return found, labels


def out_of_fold(prepared, cache_dir: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each candidate's tempered out-of-fold log probabilities (those that ran every fold) and the labels."""
    found, labels = raw_out_of_fold(prepared, SEED, cache_dir)
    tempered = {}
    for name, logits in found.items():
        temperature = fit_temperature(torch.from_numpy(logits), torch.from_numpy(labels))
        tempered[name] = log_softmax(logits / temperature)
    return tempered, labels


def single_or_reference(tempered: dict[str, np.ndarray], labels: np.ndarray, by: str, confidence: float) -> str:
    """The best single candidate by ``by`` where the paired bootstrap favours it over the reference in
    ``confidence`` of the draws, else the reference."""
    reference = mixture(tempered, normalized({n: float(n in STRATEGIES[REFERENCE].members) for n in tempered}))

    def per_image(log_probabilities):
        if by == "log loss":
            return -image_losses(log_probabilities, labels)
        return (log_probabilities.argmax(1) == labels).astype(float)

    eligible = {n: lp for n, lp in tempered.items() if study_folder(n) is not None}
    best = max(eligible, key=lambda n: per_image(eligible[n]).mean())
    return best if bootstrap_share(per_image(eligible[best]) - per_image(reference)) >= confidence else REFERENCE


def rule_regrets(default: Path, study: Path, cache_dir: Path) -> dict[str, dict[str, float]]:
    """Per cell: each rule's regret in points."""
    rows = {}
    for run in sorted((default / "runs").glob(f"*-seed{SEED}")):
        cell = run.name.removesuffix(f"-seed{SEED}")
        scores = {name: r["balanced_accuracy"] for name, r in study_runs(study / cell / f"seed{SEED}").items()}
        result = default / f"{run.name}.json"
        if not scores or not result.exists():
            continue
        tempered, labels = out_of_fold(prepared_run(run), cache_dir)
        if REFERENCE + "-final" not in scores or not tempered:
            continue
        best = max(scores.values())
        regrets = {"check as shipped": best - json.loads(result.read_text())["balanced_accuracy"]}
        for option in (REFERENCE, "multicut", "head"):
            regrets[f"always {option}"] = best - scores[study_folder(option)]
        for by in ("log loss", "accuracy"):
            for confidence in CONFIDENCES:
                pick = single_or_reference(tempered, labels, by, confidence)
                regrets[f"single by {by} @ {confidence}"] = best - scores[study_folder(pick) if pick != REFERENCE
                                                                           else REFERENCE + "-final"]  # fmt: skip
        rows[cell] = {name: 100 * value for name, value in regrets.items()}
    return rows


def leave_one_set_out(rows: dict[str, dict[str, float]]) -> dict[str, float]:
    """Per cell: the regret of the replayed rule chosen on the other data sets."""
    rules = [name for name in next(iter(rows.values())) if name.startswith("single")]
    found = {}
    for left_out in {cell.rsplit("@", 1)[0] for cell in rows}:
        others = [r for cell, r in rows.items() if cell.rsplit("@", 1)[0] != left_out]
        chosen = min(rules, key=lambda rule: np.mean([r[rule] for r in others]))
        found.update({cell: r[chosen] for cell, r in rows.items() if cell.rsplit("@", 1)[0] == left_out})
    return found


REFERENCES = {"finetune + multicut (today)": ("finetune", "multicut"),
              "head + finetune + multicut": ("head", "finetune", "multicut"),
              "head + multicut": ("head", "multicut"), "head + finetune": ("head", "finetune")}


def test_logits(models: dict[str, Path], prepared) -> dict[tuple[str, str], torch.Tensor]:
    """Each saved model's logits on the validation and test splits, by (name, split) (``study.saved_outputs``)."""
    stages = {name: saved_outputs(prepared, folder) for name, folder in models.items()}
    return {(name, split): stage.logits[split] for name, stage in stages.items() for split in ("val", "test")}


def balanced(logits: torch.Tensor, labels: np.ndarray, classes) -> float:
    return 100 * classification_metrics(labels, logits.numpy().argmax(1), classes)["balanced_accuracy"]


def reference_members(study: Path) -> dict[str, dict[str, float]]:
    """Per finished study seed: the regret of each reference of :data:`REFERENCES`."""
    rows = {}
    for seed_folder in sorted(study.glob("*@*/seed*")):
        scores = {name: r["balanced_accuracy"] for name, r in study_runs(seed_folder).items()}
        models = {option: seed_folder / study_folder(option) / "model" for option in ("head", "finetune", "multicut")}
        if "ensemble-final" not in scores or not all(folder.is_dir() for folder in models.values()):
            continue
        prepared = prepared_run(seed_folder / study_folder("head"))
        logits = test_logits(models, prepared)
        val_labels, test_labels = torch.from_numpy(prepared.splits.val.labels), prepared.splits.test.labels
        temperatures = {name: fit_temperature(logits[name, "val"], val_labels) for name in models}
        accuracy = {reference: balanced(combined([logits[m, "test"] for m in members], [temperatures[m] for m in members]),
                                        test_labels, prepared.classes)
                    for reference, members in REFERENCES.items()}  # fmt: skip
        best = max(100 * max(scores.values()), *accuracy.values())
        rows[f"{seed_folder.parent.name}#{seed_folder.name}"] = {name: best - value for name, value in accuracy.items()}
    return rows


def default_runs(default: Path, seeds: list[int]) -> list[Path]:
    """The default's run folders of ``seeds`` in ``default``: ``default_on_own_images.py``'s
    (``runs/<cell>-seed<s>``) or ``imbalanced.py``'s (``runs/<folder>-seed<s>-auto-table``)."""
    return sorted(run for seed in seeds for pattern in (f"*-seed{seed}", f"*-seed{seed}-auto-table")
                  for run in (default / "runs").glob(pattern))  # fmt: skip


def temperature_sources(default: Path, seeds: list[int]) -> dict[str, dict[str, float]]:
    """Per ensemble the default trained (runs of ``seeds``): its test balanced accuracy with the
    out-of-fold temperatures, with temperatures fitted on the final members' validation logits,
    with none (every member at 1), and - to measure how much calibration could move it at all,
    never a rule - with each member's temperature fitted on the test split itself."""
    rows = {}
    for run in default_runs(default, seeds):
        plan = json.loads((run / "plan.json").read_text())
        if len(plan.get("members") or ()) < 2:
            continue
        prepared = prepared_run(run)
        members = plan["members"]
        outputs = test_logits({m["candidate"]: run / "model" / m["candidate"] for m in members}, prepared)
        val_labels, test_labels = torch.from_numpy(prepared.splits.val.labels), prepared.splits.test.labels
        weights = [m["weight"] for m in members]
        by_source = {"out of fold": [m["temperature"] for m in members],
                     "validation": [fit_temperature(outputs[m["candidate"], "val"], val_labels) for m in members],
                     "none": [1.0] * len(members),
                     "test (oracle)": [fit_temperature(outputs[m["candidate"], "test"], torch.from_numpy(test_labels))
                                       for m in members]}  # fmt: skip
        folder = run.name.removesuffix("-auto-table")  # imbalanced.py's folders: one set's seeds
        cell = folder.replace("-seed", "@seed") if folder != run.name else run.name.replace("-seed", "#")
        rows[cell] = {source: balanced(combined([outputs[m["candidate"], "test"] for m in members], temperatures, weights),
                                       test_labels, prepared.classes)
                      for source, temperatures in by_source.items()}  # fmt: skip
    return rows


def print_table(rows: dict[str, dict[str, float]], title: str, worst: bool = True) -> None:
    columns = list(next(iter(rows.values())))
    print(f"\n{title}\n\n| cell | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for cell, r in rows.items():
        print(f"| {cell} | " + " | ".join(f"{r[c]:.2f}" for c in columns) + " |")
    print("| **mean** | " + " | ".join(f"**{np.mean([r[c] for r in rows.values()]):.2f}**" for c in columns) + " |")
    if worst:
        print("| worst | " + " | ".join(f"{np.max([r[c] for r in rows.values()]):.2f}" for c in columns) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="runs/study-colour")
    parser.add_argument("--default", default="runs/default-own",
                        help="default_on_own_images.py's or imbalanced.py's --out folder")
    parser.add_argument("--cache-dir", default="/tmp/study-cache")
    parser.add_argument("--seeds", type=int, nargs="+", default=[SEED], help="the default's runs the temperature "
                        "table reads (the rule tables read seed 0)")  # fmt: skip
    parser.add_argument("--only-temperatures", action="store_true", help="print only the temperature table")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if not args.only_temperatures:
        rule_tables(args)
    temperatures = temperature_sources(Path(args.default), args.seeds)
    print_table(temperatures, "Test balanced accuracy (%) of the default's ensembles by where their temperatures come from",
                worst=False)
    for other in ("validation", "none", "test (oracle)"):
        higher = sum(r[other] > r["out of fold"] for r in temperatures.values())
        lower = sum(r[other] < r["out of fold"] for r in temperatures.values())
        test = paired_test_by_set({cell.replace("#", "-seed"): {k: -v for k, v in r.items()} for cell, r in
                                   temperatures.items()}, other, "out of fold")  # fmt: skip
        print(f"{other} temperatures higher in {higher}, lower in {lower} of {len(temperatures)} ensembles; "
              f"{test['mean_difference']:+.2f} points over {test['sets']} data sets (p = {test['p_value']:.2f})")


def rule_tables(args) -> None:
    """The rules replayed on seed 0's out-of-fold evidence, and the reference's members."""
    rows = rule_regrets(Path(args.default), Path(args.study), Path(args.cache_dir))
    for cell, value in leave_one_set_out(rows).items():
        rows[cell]["leave one set out"] = value
    print_table(rows, f"Regret (points) of each rule, {len(rows)} cells")
    for rule in ("check as shipped", "leave one set out", "always multicut"):
        test = paired_test_by_set(rows, rule, "always ensemble")
        print(f"{rule} against always ensemble: {test['mean_difference']:+.2f} points less regret over "
              f"{test['sets']} data sets (exact sign-flip test over sets, p = {test['p_value']:.2f})")
    references = reference_members(Path(args.study))
    print_table(references, f"Regret (points) of the reference ensemble by its members, {len(references)} study seeds")
    for name in list(REFERENCES)[1:]:
        test = paired_test_by_set(references, name, next(iter(REFERENCES)))
        print(f"{name} against today's pair: {test['mean_difference']:+.2f} points less regret over {test['sets']} "
              f"data sets (exact sign-flip test over sets, p = {test['p_value']:.3f})")


if __name__ == "__main__":
    main()
