"""Where the default left the equal-weight reference: did leaving it pay on the test split?

The out-of-fold check keeps the strategy table's equal-weight ``ensemble`` (``multicut`` +
``finetune``) unless a paired bootstrap over the labelled images favours another combination or a
single candidate. For every default run of ``--default`` (an ``imbalanced.py --out`` folder, whose
``<folder>-ensemble-table.json`` runs are read from ``--ensemble``, or a
``default_on_own_images.py --out`` folder, whose always-``ensemble`` is the study's
``ensemble-final`` run of the same split in ``--study``), its ``plan.json`` says whether the
check left the reference; its test balanced accuracy is set against always-``ensemble``'s on the
same folder, in two groups (left, kept), with the mean difference, the folders higher and lower,
and an exact sign-flip test over the data sets. Reads finished runs; trains nothing.

    cd benchmarks && python left_the_reference.py --default ../runs/user-12w --ensemble ../runs/user-12w
    cd benchmarks && python left_the_reference.py --default ../runs/default-grey --study ../runs/study
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from transferlab.advisor.study import paired_test_by_set


def always_ensemble(run: Path, ensemble: Path | None, study: Path | None) -> float | None:
    """Always-``ensemble``'s test balanced accuracy on the folder of the default's ``run``."""
    if run.name.endswith("-auto-table"):  # imbalanced.py: <set>-seed<s>-auto-table
        path = (ensemble or run.parent.parent) / f"{run.name.removesuffix('-auto-table')}-ensemble-table.json"
        return json.loads(path.read_text())["balanced_accuracy"] if path.exists() else None
    cell, seed = run.name.rsplit("-seed", 1)  # default_on_own_images.py: <cell>-seed<s>
    path = (study or Path("runs/study")) / cell / f"seed{seed}" / "ensemble-final" / "study-run.json"
    return json.loads(path.read_text())["result"]["balanced_accuracy"] if path.exists() else None


def folder_rows(default: Path, ensemble: Path | None, study: Path | None) -> dict[str, dict]:
    """Per default run with an always-``ensemble`` beside it: whether the check left the reference,
    and the default's test balanced accuracy minus always-``ensemble``'s, in points."""
    rows = {}
    for run in sorted(path.parent for path in (default / "runs").glob("*/plan.json")):
        reason = (json.loads((run / "plan.json").read_text()).get("crossfit") or {}).get("reason")
        reference = always_ensemble(run, ensemble, study)
        if reason is None or reference is None:  # no check ran (the forecast decided), or no ensemble to compare
            continue
        accuracy = json.loads((run / "metrics.json").read_text())["balanced_accuracy"]
        name = run.name  # the sign-flip test's data set: the name up to its last "@"
        if name.endswith("-auto-table"):
            name = name.removesuffix("-auto-table").replace("-seed", "@seed")
        rows[name] = {"left": not reason.startswith("kept"), "difference": 100 * (accuracy - reference)}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--default", type=Path, required=True)
    parser.add_argument("--ensemble", type=Path, help="imbalanced.py's --out holding the ensemble runs")
    parser.add_argument("--study", type=Path, help="the study the default_on_own_images.py runs were judged on")
    args = parser.parse_args()
    rows = folder_rows(args.default, args.ensemble, args.study)
    for left in (True, False):
        group = {name: row["difference"] for name, row in rows.items() if row["left"] == left}
        if not group:
            continue
        differences = np.array(list(group.values()))
        test = paired_test_by_set({name: {"default": -d, "ensemble": 0.0} for name, d in group.items()},
                                  "default", "ensemble")  # fmt: skip
        print(f"{'left' if left else 'kept'} the reference on {len(group)} folders: the default "
              f"{differences.mean():+.2f} points against always-ensemble, higher on {(differences > 0).sum()}, "
              f"lower on {(differences < 0).sum()} (by data set: p = {test['p_value']:.2g} over {test['sets']})")  # fmt: skip
        if left:
            print("  " + ", ".join(f"{name} {d:+.1f}" for name, d in group.items()))


if __name__ == "__main__":
    main()
