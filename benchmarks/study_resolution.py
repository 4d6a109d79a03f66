"""Do the 64 px study's conclusions hold at the resolution the product trains at? (issue 22)

The study's protocol (``advisor.study.run_seed``: the advisor's measurements, then every option with
the CLI's defaults, the ensemble from its members) on a subset of its cells at 112 px - what `auto`
plans for 28x28 images - beside the same cells and seeds of the 64 px study, read from its folder
(nothing retrains there). Per cell and resolution: the oracle, and the regret of each fixed rule,
of the advisor (the advised options: the ensemble) and of the shipped forecaster choosing among
every option (fitted on the 64 px study, so at 112 px it forecasts at a resolution it was not
fitted at).

Resumable: every run is kept in --out as the study keeps its own.

    python benchmarks/study_resolution.py --out runs/study112 --study runs/study --cache-dir /tmp/study-cache
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

DATA = ("fashion-mnist", "animal-mnist", "glyphs")
SIZES = (10, 30)
SEEDS = (0,)
RULES = {"always head": "head@final", "always finetune": "finetune@final", "always multicut": "multicut@all",
         "always ensemble": "ensemble@final"}  # fmt: skip


def forecast_pick(seed: dict, among: list[str] | None) -> str:
    """The run the shipped forecaster picks on ``seed`` among ``among`` (``None``: every option)."""
    from transferlab.advisor.study import option_run, signals
    from transferlab.forecast import Forecaster, choose

    return option_run(seed, choose(Forecaster.load().predict(signals(seed)), among).option)


def cell_row(seeds: list[dict]) -> dict:
    from transferlab.advisor.study import cell_means, regret
    from transferlab.strategies import advised_options

    means = cell_means(seeds)
    oracle = max(means, key=means.get)
    picks = [forecast_pick(s, advised_options()) for s in seeds]
    row = {"oracle": f"{oracle} {means[oracle]:.3f}", "advisor": regret(seeds, picks), "advisor's picks": ", ".join(picks),
           "forecast, any option": regret(seeds, [forecast_pick(s, None) for s in seeds])}  # fmt: skip
    row.update({rule: regret(seeds, [key] * len(seeds)) for rule, key in RULES.items()})
    return row


def main() -> None:
    from transferlab.advisor.study import FULL, run_seed

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/study112")
    parser.add_argument("--study", default="runs/study", help="the 64 px study's folder (read, not retrained)")
    parser.add_argument("--cache-dir")
    parser.add_argument("--resolution", type=int, default=112)
    args = parser.parse_args()
    at_product = dataclasses.replace(FULL, resolution=args.resolution)
    studies = (("64 px", FULL, Path(args.study)), (f"{args.resolution} px", at_product, Path(args.out)))
    rows = []
    for data in DATA:
        for size in SIZES:
            cell = {}
            for label, settings, out in studies:
                seeds = [run_seed(data, size, seed, settings, out, args.cache_dir) for seed in SEEDS]
                cell[label] = cell_row(seeds)
            rows.append((f"{data}@{size}", cell))
            print(f"{data}@{size}: " + "; ".join(f"{label} oracle {r['oracle']}, advisor {r['advisor']:.2f}"
                                                  for label, r in cell.items()), flush=True)  # fmt: skip
    columns = ["advisor", "forecast, any option", *RULES]
    print("\n| cell | resolution | oracle | advisor's picks | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 4) + "|")
    for name, cell in rows:
        for label, r in cell.items():
            picks = r["advisor's picks"]
            print(f"| {name} | {label} | {r['oracle']} | {picks} | " + " | ".join(f"{r[c]:.2f}" for c in columns) + " |")
    for label in rows[0][1]:
        means = {c: np.mean([cell[label][c] for _, cell in rows]) for c in columns}
        print(f"| **mean** | {label} | | | " + " | ".join(f"{means[c]:.2f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
