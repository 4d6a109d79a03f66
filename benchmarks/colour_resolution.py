"""How regret and the ranking of options change from 112 to 224 px on the colour pool (issue #32).

Reads two studies' finished runs (nothing trains): ``transferlab study --pool colour`` at 112 px
and the same with ``--resolution 224`` in its own folder, on the cells and seeds both finished.
Each is scored as the study scores itself (``study.leave_one_parent_out`` over the common cells
only); per cell, side by side: the oracle option and accuracy, and the regret of each always-rule
and of the study's advisor (the forecast, fitted on the other data sets: the out-of-fold check is
not part of the study); then each rule's mean and worst regret per resolution, and the paired
sign-flip test over data sets of each rule's regret at 224 against 112.

    python benchmarks/colour_resolution.py --low runs/study-colour --high runs/study-colour-224 --sizes 5 --seeds 0 \
        --cache-dir /tmp/study-cache
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from transferlab.advisor.study import COLOUR, Unfinished, leave_one_parent_out, paired_test_by_set, run_seed

RULES = ("advisor", "always head", "always finetune", "always multicut", "always ensemble")


def finished(out: Path, resolution: int, sizes: list[int], seeds: list[int], cache_dir: str | None) -> dict:
    """The seeds ``out`` finished at ``resolution`` (with ``cache_dir``: part of a run's key), by (data, size, seed)."""
    settings = dataclasses.replace(COLOUR, resolution=resolution)
    found = {}
    for data in settings.data:
        for size in sizes:
            for seed in seeds:
                try:
                    found[data, size, seed] = run_seed(data, size, seed, settings, out, cache_dir, finished_only=True)
                except Unfinished:
                    continue
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--low", default="runs/study-colour")
    parser.add_argument("--high", default="runs/study-colour-224")
    parser.add_argument("--resolutions", nargs=2, type=int, default=[112, 224])
    parser.add_argument("--sizes", nargs="+", type=int, default=[5])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--cache-dir", help="the --cache-dir both studies ran with (their runs are keyed by it)")
    args = parser.parse_args()
    low, high = (finished(Path(folder), r, args.sizes, args.seeds, args.cache_dir)
                 for folder, r in zip((args.low, args.high), args.resolutions))  # fmt: skip
    common = sorted(set(low) & set(high))
    if not common:
        print("no cell and seed finished at both resolutions yet")
        return
    scored = {r: leave_one_parent_out([records[key] for key in common])
              for r, records in zip(args.resolutions, (low, high))}  # fmt: skip
    cells = list(scored[args.resolutions[0]])
    columns = [f"{rule}, {r} px" for rule in ("oracle", *RULES) for r in args.resolutions]
    print("| cell | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for cell in cells:
        values = [f"{scored[r][cell]['oracle']} {scored[r][cell]['oracle_accuracy']:.3f}" if rule == "oracle"
                  else f"{scored[r][cell][rule]:.2f}" for rule in ("oracle", *RULES) for r in args.resolutions]  # fmt: skip
        print(f"| {cell} | " + " | ".join(values) + " |")
    print()
    for rule in RULES:
        figures = ", ".join(f"{r} px {np.mean([c[rule] for c in scored[r].values()]):.2f} / "
                            f"{np.max([c[rule] for c in scored[r].values()]):.2f}" for r in args.resolutions)  # fmt: skip
        paired = {cell: {"low": scored[args.resolutions[0]][cell][rule], "high": scored[args.resolutions[1]][cell][rule]}
                  for cell in cells}  # fmt: skip
        test = paired_test_by_set(paired, "high", "low")
        print(f"{rule}: mean / worst regret {figures}; {args.resolutions[1]} px against {args.resolutions[0]} px "
              f"{test['mean_difference']:+.2f} points less regret (by data set p = {test['p_value']:.2f}, "
              f"{test['sets']} sets)")


if __name__ == "__main__":
    main()
