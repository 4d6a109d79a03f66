"""What the default costs against always-``ensemble`` (issue #31, item 5), measured side by side.

For each data set and size, ``transferlab train DATA --resolution 112 --samples-per-class N
--test-per-class 100`` (the default: measuring, the out-of-fold check or holdout, the final
training) and the same with ``--strategy ensemble`` run one after the other, each in a fresh
process on a fresh cache (so features, the pilot and the folds are all paid for: measuring
included), in alternating order from one pair to the next. The ratio of wall times is the
figure; the check's estimate and its folds' seconds come from the default's plan. One JSON file
per pair in --out; a rerun resumes.

    python benchmarks/default_cost.py --out runs/default-cost [--cases fashion-mnist@100 ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = (("emoji-google", 10), ("emoji-google", 30), ("fashion-mnist", 10), ("fashion-mnist", 30),
         ("fashion-mnist", 100), ("fashion-mnist", 150))  # fmt: skip


TEST_PER_CLASS = 100  # Fashion-MNIST's 10,000 test images would otherwise take most of both runs' time


def timed_train(data: str, size: int, out: Path, extra: list[str]) -> dict:
    """One ``transferlab train`` in its own process and cache: its wall seconds and plan."""
    cache = Path(tempfile.mkdtemp(prefix="cost-cache-"))
    try:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "transferlab", "train", data, "--resolution", "112",
                        "--samples-per-class", str(size), "--test-per-class", str(TEST_PER_CLASS), "--out", str(out),
                        "--cache-dir", str(cache), *extra], check=True, capture_output=True)  # fmt: skip
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    plan = json.loads((out / "plan.json").read_text()) if (out / "plan.json").exists() else {}
    metrics = json.loads((out / "metrics.json").read_text())
    return {"seconds": seconds, "balanced_accuracy": metrics["balanced_accuracy"], "strategy": metrics["strategy"],
            "crossfit": {k: (plan.get("crossfit") or {}).get(k) for k in ("folds", "estimate_seconds", "fold_seconds")}}


def measure_pair(data: str, size: int, out: Path, default_first: bool) -> dict:
    runs = {"default": [], "ensemble": ["--strategy", "ensemble"]}
    order = list(runs) if default_first else list(reversed(runs))
    return {name: timed_train(data, size, out / f"{data}@{size}" / name, runs[name]) for name in order}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/default-cost")
    parser.add_argument("--report", action="store_true", help="only print the table of the finished pairs")
    parser.add_argument("--cases", nargs="+", metavar="DATA@N", help="data sets and images per class "
                        f"(default: {' '.join(f'{d}@{n}' for d, n in CASES)})")  # fmt: skip
    args = parser.parse_args()
    cases = [(c.rpartition("@")[0], int(c.rpartition("@")[2])) for c in args.cases] if args.cases else CASES
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("| data, images per class | default, s | always ensemble, s | ratio | check | default's model "
          "| accuracy default / ensemble |")
    print("|---|---|---|---|---|---|---|")
    for number, (data, size) in enumerate(cases):
        path = out / f"{data}@{size}.json"
        if not path.exists() and not args.report:
            path.write_text(json.dumps(measure_pair(data, size, out, default_first=number % 2 == 0)))
        if not path.exists():
            continue
        pair = json.loads(path.read_text())
        default, ensemble = pair["default"], pair["ensemble"]
        folds = default["crossfit"]["folds"]
        check = "-" if folds is None else f"{folds} folds" if isinstance(folds, int) else folds
        print(f"| {data}, {size} | {default['seconds']:.0f} | {ensemble['seconds']:.0f} | "
              f"**{default['seconds'] / ensemble['seconds']:.2f}x** | {check} | {default['strategy']} | "
              f"{default['balanced_accuracy']:.3f} / {ensemble['balanced_accuracy']:.3f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
