"""Out-of-sample check of the advisor's thresholds: study cells at sizes the calibration never saw.

The thresholds in ``advisor.Thresholds`` were calibrated on the full study's cells (10, 100 and
1000 images per class; digits 10 and all). This runs the same source/target pairs with the full
study's settings at 30 images per class (on the "small" side of the calibrated thresholds) and at
300 (Fashion-MNIST only: digits has about 126 per class), and prints the same table; then the
thresholds calibrated on the full study's cells and these together, with their regrets in-sample
and leaving one cell out.

Usage: python benchmarks/study_holdout.py [--out runs/study-holdout] [--cache-dir DIR]
(needs the full study: run ``transferlab study`` first, or pass --study-dir). About 7 minutes on
2 cores; finished runs are reused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from transferlab.advisor.study import (
    FULL,
    OTHER_FIVE,
    Cell,
    calibrate,
    cells_table,
    held_out_regrets,
    pick_regret,
    run_cell,
)


def holdout_cells(source: str) -> list[Cell]:
    lite, res = "efficientnet_lite0", FULL.resolution
    cells = []
    for n in (30, 300):
        cells += [Cell(f"imagenet->fmnist10@{n}", lite, "fashion-mnist", None, n, res),
                  Cell(f"fmnist-upper->fmnist-other5@{n}", source, "fashion-mnist", OTHER_FIVE, n, 28)]  # fmt: skip
    cells += [Cell("imagenet->digits@30", lite, "digits", None, 30, res),
              Cell("fmnist-upper->digits@30", source, "digits", None, 30, 28)]  # fmt: skip
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/study-holdout")
    parser.add_argument("--study-dir", default="runs/study")
    parser.add_argument("--cache-dir")
    args = parser.parse_args()
    out, study = Path(args.out), Path(args.study_dir)
    cells = [run_cell(cell, FULL, out, args.cache_dir) for cell in holdout_cells(str(study / "source-cnn-small" / "model"))]
    out.mkdir(parents=True, exist_ok=True)
    (out / "holdout.json").write_text(json.dumps(cells, indent=2))
    regrets = [c["regret_points"] for c in cells]
    print(cells_table(cells))
    print(f"mean regret {np.mean(regrets):.2f} points, worst {max(regrets):.2f}; "
          f"advisor cost at most {max(c['advise_cost_fraction'] for c in cells):.1%} of brute force")  # fmt: skip
    both = json.loads((study / "study.json").read_text())["cells"] + cells
    thresholds = calibrate(both)
    in_sample, held_out = [pick_regret(c, thresholds) for c in both], held_out_regrets(both)
    print(f"calibrated on the study's {len(both) - len(cells)} cells and these {len(cells)}: {thresholds}")
    print(f"  in-sample regret mean {np.mean(in_sample):.2f}, worst {max(in_sample):.2f}; "
          f"leaving one cell out mean {np.mean(held_out):.2f}, worst {max(held_out):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
