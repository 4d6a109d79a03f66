"""Re-reads a study's per-cell table (``table.md``, or the copy in docs/advisor.md) and prints what
it supports with data sets, not cells, as the units (issue 32's statistics):

* the advisor against each baseline: the exact sign-flip test over the data sets
  (``study.paired_test_by_set``), beside the count of cells that the old cell-level test used;
* the one-seed pick regret (the table's "noise floor") averaged only over the cells with two or
  more seeds, where it is defined (with one seed it is 0 by construction).

    python benchmarks/study_table_tests.py docs/advisor.md
    python benchmarks/study_table_tests.py runs/study-colour/table.md --columns oracle advisor "always head" \
        "always finetune" "always multicut" "always ensemble" "one-seed pick regret"   # docs/advisor.md's colour table

``--columns`` prints the per-cell table with only those columns, with its mean and worst rows.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from transferlab.advisor.study import paired_test_by_set


def cell_rows(text: str) -> tuple[list[str], dict[str, dict]]:
    """The first per-cell table in ``text`` (header ``| cell | oracle | ...``): its columns and, per
    cell, each column's text."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| cell | oracle |"))
    header = [h.strip() for h in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("| ") or line.startswith("| **"):
            break
        values = [v.strip() for v in line.strip("|").split("|")]
        rows[values[0]] = dict(zip(header, values))
    return header, rows


def print_columns(rows: dict[str, dict], columns: list[str]) -> None:
    """The per-cell table with only ``columns``, and the mean and worst of each regret column."""
    print("| cell | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for cell, row in rows.items():
        print(f"| {cell} | " + " | ".join(row[column] for column in columns) + " |")
    for name, summary in (("mean", np.mean), ("worst", np.max)):
        figures = []
        for column in columns:
            values = [float(row[column]) for row in rows.values() if re.fullmatch(r"-?[\d.]+", row[column])]
            figures.append(f"{summary(values):.2f}" if values and column != "oracle" else "")
        print(f"| **{name}** | " + " | ".join(figures) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", type=Path, help="a study's table.md, or a page holding a copy of it")
    parser.add_argument("--columns", nargs="+", help="print the per-cell table with only these columns")
    args = parser.parse_args()
    header, rows = cell_rows(args.table.read_text())
    if args.columns:
        print_columns(rows, args.columns)
        return
    noise = next(h for h in header if h in ("noise floor", "one-seed pick regret"))  # its name before and after 2026-12-04
    rules = header[header.index("advisor") : header.index(noise)]
    scored = {cell: {rule: float(row[rule]) for rule in rules} for cell, row in rows.items()}
    sets = len({cell.rsplit("@", 1)[0] for cell in rows})
    for baseline in rules[1:]:
        test = paired_test_by_set(scored, "advisor", baseline)
        print(f"advisor against {baseline}: {test['mean_difference']:+.2f} points less regret, by data set "
              f"p = {test['p_value']:.3f} ({sets} sets; {len(rows)} cells)")  # fmt: skip
    seeds = {cell: len(re.split(r",\s*", row["advisor's picks"])) for cell, row in rows.items()}
    defined = [float(rows[cell][noise]) for cell, n in seeds.items() if n > 1 and rows[cell][noise] != "-"]
    print(f"one-seed pick regret ('noise floor') over the {len(defined)} cells with two or more seeds: mean "
          f"{np.mean(defined):.2f}, worst {np.max(defined):.2f} (the table's mean over all {len(rows)} cells counts "
          f"{len(rows) - len(defined)} one-seed cells at 0)")  # fmt: skip


if __name__ == "__main__":
    main()
