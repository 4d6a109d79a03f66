"""The default decided on the user's own images, judged against every option of a study on the same splits.

For each cell and seed a study finished (``transferlab study --pool colour --out runs/study-colour``),
``transferlab train DATA`` with nothing but the study's data flags (``--resolution R
--samples-per-class N --test-per-class T --seed S``) runs the default: measuring, the out-of-fold
check, training. Its test balanced accuracy is set beside the study's options on the same split
(the study's ``head``, ``truncate`` at every cut, ``finetune``, ``multicut``, ``scratch``,
``ensemble``): regret against the best of them, and against always-``ensemble`` (today's safe
choice), always-``head``, always-``finetune``, always-``multicut`` and, where the study wrote its
``study.json``, the forecast rule (the study's leave-one-data-set-out advisor); and the seconds the
out-of-fold check's folds took to train (not compared with the study's run times: those ran under another load and
paid for the features the default's runs then found cached). One JSON file per run in --out; a
rerun resumes. ``--before DIR`` (the --out of the same command before a change) adds those runs as
the rule ``default before``, read, never trained, so the default is judged against itself.

    python benchmarks/default_on_own_images.py --study runs/study-colour --out runs/default-own \\
        --cache-dir /tmp/study-cache --sizes 5 10 --seeds 0
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np
from resumable import arguments, record

import transferlab as tl
from transferlab.advisor.study import member_run, paired_test_by_set

BASELINES = ("ensemble", "head", "finetune", "multicut")


def study_runs(cell_seed: Path) -> dict[str, dict]:
    """The study's finished runs of one seed, its options only (not the runs it trains only as an
    ensemble's member): run folder name -> its result and config."""
    runs = {}
    for path in sorted(cell_seed.glob("*/study-run.json")):
        if member_run(path.parent.name):
            continue
        saved = json.loads(path.read_text())
        runs[path.parent.name] = {**saved["result"], "config": saved["config"]}
    return runs


def run_default(config: dict, data: str, seed: int, out: Path, cache_dir: str | None) -> dict:
    started = time.perf_counter()
    result = tl.train(data, resolution=config["resolution"], samples_per_class=config["samples_per_class"],
                      test_per_class=config["test_per_class"], seed=seed, out=str(out), cache_dir=cache_dir)  # fmt: skip
    crossfit = (result.plan.crossfit or {}) if result.plan else {}
    return {"balanced_accuracy": result.metrics["balanced_accuracy"], "seconds": time.perf_counter() - started,
            "strategy": result.plan.strategy, "members": list(result.plan.members),
            "crossfit_seconds": crossfit.get("fold_seconds"), "reason": crossfit.get("reason")}  # fmt: skip


def forecast_picks(study: Path) -> dict[tuple[str, int], str]:
    """The study's leave-one-data-set-out forecast rule (the advisor, ``auto`` before the check and
    its fallback since): its pick's run folder per (cell, seed), from ``study.json`` where the study wrote one."""
    path = study / "study.json"
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    seeds = saved["settings"]["seeds"]
    return {(cell, seeds[i]): pick.replace("@", "-", 1) for cell, scored in saved["cells"].items()
            for i, pick in enumerate(scored["picks"])}  # fmt: skip


def cell_rows(args, study: Path) -> list[dict]:
    rows, picks = [], forecast_picks(study)
    for cell in sorted(p for p in study.iterdir() if p.is_dir() and "@" in p.name):
        data, size = cell.name.rsplit("@", 1)
        if args.data and data not in args.data or int(size) not in args.sizes:
            continue
        for seed in args.seeds:
            runs = study_runs(cell / f"seed{seed}")
            if "ensemble-final" not in runs:
                continue  # the study has not finished this seed
            path = args.out / f"{cell.name}-seed{seed}.json"
            if not args.report:
                record(path, functools.partial(run_default, runs["head-final"]["config"], data, seed,
                                               args.out / "runs" / f"{cell.name}-seed{seed}", args.cache_dir))  # fmt: skip
            if path.exists():
                before = args.before / path.name if args.before else None
                rows.append({"cell": cell.name, "seed": seed, "default": json.loads(path.read_text()), "runs": runs,
                             "forecast pick": picks.get((cell.name, seed)),
                             "before": json.loads(before.read_text()) if before and before.exists() else None})  # fmt: skip
    return rows


def option_of(run_name: str) -> str:
    return run_name.split("-")[0]


def regrets(row: dict) -> dict[str, float]:
    scores = {name: r["balanced_accuracy"] for name, r in row["runs"].items()}
    defaults = {"default": row["default"]} | ({"default before": row["before"]} if row["before"] else {})
    best = max(max(scores.values()), *(run["balanced_accuracy"] for run in defaults.values()))
    found = {name: best - run["balanced_accuracy"] for name, run in defaults.items()}
    for option in BASELINES:
        name = next(n for n in scores if option_of(n) == option)
        found[f"always {option}"] = best - scores[name]
    if row["forecast pick"] is not None:
        found["forecast rule"] = best - scores[row["forecast pick"]]
    return {k: 100 * v for k, v in found.items()}


def seed_averaged_regrets(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per cell with more than one finished seed: each rule's regret in points against the option
    best on average over those seeds, every accuracy averaged over the seeds first (the test split's
    noise, which a single seed's regret carries whole, shrinks with the seeds)."""
    by_cell: dict[str, list[dict]] = {}
    for row in rows:
        by_cell.setdefault(row["cell"], []).append(row)
    found = {}
    for cell, seeds in by_cell.items():
        if len(seeds) < 2:
            continue
        options = set.intersection(*(set(row["runs"]) for row in seeds))
        mean = {name: np.mean([row["runs"][name]["balanced_accuracy"] for row in seeds]) for name in options}
        mean["default"] = np.mean([row["default"]["balanced_accuracy"] for row in seeds])
        best = max(mean.values())
        regret = {"default": best - mean["default"]}
        for option in BASELINES:
            regret[f"always {option}"] = best - mean[next(n for n in options if option_of(n) == option)]
        if all(row["forecast pick"] is not None for row in seeds):
            regret["forecast rule"] = best - np.mean([row["runs"][row["forecast pick"]]["balanced_accuracy"] for row in seeds])
        found[cell] = {rule: 100 * value for rule, value in regret.items()}
    return found


def main() -> None:
    args = arguments(__doc__, "runs/default-own", (), (0,), sizes=(5, 10, 30), study="runs/study-colour",
                     extend=lambda parser: parser.add_argument("--before", type=Path))  # fmt: skip
    study = Path(args.study)
    if not study.is_dir():
        print(f"no study at {study}: run 'transferlab study --pool colour --out {study}' first")
        return
    rows = cell_rows(args, study)
    if args.before:  # judged on the runs both have
        rows = [row for row in rows if row["before"]]
    if not rows:
        print("no finished study cells to judge against yet")
        return
    table = [(row, regrets(row)) for row in rows]
    rules = list(table[0][1])
    print("| cell | seed | default's choice | " + " | ".join(rules) + " | check, seconds |")
    print("|---|---|---|" + "---|" * (len(rules) + 1))
    for row, regret in table:
        members = row["default"]["members"]
        choice = ", ".join(f"{m['candidate']} {m['weight']:.2f}" for m in members) or row["default"]["strategy"]
        check = row["default"]["crossfit_seconds"]
        print(f"| {row['cell']} | {row['seed']} | {choice} | " + " | ".join(f"{regret[r]:.2f}" for r in rules)
              + f" | {'-' if check is None else f'{check:.0f}'} |")  # fmt: skip
    print()
    for rule in rules:
        values = np.asarray([regret[rule] for _, regret in table])
        print(f"{rule}: mean regret {values.mean():.2f}, worst {values.max():.2f} points ({len(values)} runs)")
    averaged = seed_averaged_regrets(rows)
    if averaged:
        print(f"\naveraged over seeds first ({len(averaged)} cells with two or more seeds):")
        for rule in rules:
            values = np.asarray([regret[rule] for regret in averaged.values()])
            print(f"{rule}: mean regret {values.mean():.2f}, worst {values.max():.2f} points")
        test = paired_test_by_set(averaged, "default", "always ensemble")
        print(f"default against always ensemble, seed-averaged: {test['mean_difference']:+.2f} points less regret "
              f"over {test['sets']} data sets (p = {test['p_value']:.2f})")
    scored = {f"{row['cell']}#{row['seed']}": regret for row, regret in table}
    for baseline in [rule for rule in ("default before", "always ensemble", "always multicut", "forecast rule")
                     if rule in rules]:  # fmt: skip
        test = paired_test_by_set(scored, "default", baseline)
        print(f"default against {baseline}: {test['mean_difference']:+.2f} points less regret on average over "
              f"{test['sets']} data sets (exact sign-flip test over sets, p = {test['p_value']:.2f})")


if __name__ == "__main__":
    main()
