"""Each fine-tuning option against plain LP-FT on the data-set pool: test balanced accuracy (mean +-
std over seeds; each seed redraws the training subsample), time, trainable parameters and peak
resident memory (each run is its own `transferlab train` process).

Resumable: every finished run's metrics.json is reused.

    python benchmarks/finetune_options.py --out runs/finetune-options --cache-dir /tmp/options-cache
    python benchmarks/finetune_options.py --data digits --sizes 10 30   # a part of the pool

The tables at the end cover every finished cell in --out (`--report`: only print them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

OPTIONS = {
    "LP-FT": [],
    "l2-sp": ["--regularizer", "l2-sp"],
    "bss": ["--regularizer", "bss"],
    "bias": ["--tune", "bias"],
    "norm": ["--tune", "norm"],
    "lora": ["--tune", "lora"],
    "one-cycle": ["--schedule", "one-cycle"],
}
DATA = ("fashion-mnist", "digits", "animal-mnist", "orientation", "count", "glyphs", "colour-shape")
SIZES = (10, 30, 100)  # 1000 per class: only fashion-mnist has that many (--data fashion-mnist --sizes 1000)
SEEDS = (0, 1, 2)
SEEDED_SIZES = 30  # every seed runs up to this many images per class, the first seed above
COMMON = ["--strategy", "finetune", "--freeze-bn", "--resolution", "64", "--test-per-class", "100", "--epochs", "8"]
CLI = str(Path(sys.executable).parent / "transferlab")


def run(data: str, size: int, seed: int, option: str, out: Path, cache_dir: str | None) -> dict:
    folder = out / f"{data}@{size}" / f"{option}-seed{seed}"
    if not (folder / "metrics.json").exists():
        command = [CLI, "train", data, *COMMON, *OPTIONS[option], "--samples-per-class", str(size), "--seed", str(seed),
                   "--out", str(folder)] + (["--cache-dir", cache_dir] if cache_dir else [])  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, env={**os.environ, "TQDM_DISABLE": "1"})
    return json.loads((folder / "metrics.json").read_text())


def trainable_share(option: str) -> str:
    """Trainable body parameters of EfficientNet-Lite0 under the option (measured on the model)."""
    from transferlab.sources import build_backbone
    from transferlab.trainer.loops import tunable
    from transferlab.trainer.lora import add_lora

    body = build_backbone("efficientnet_lite0", pretrained=False).model
    tune = {"bias": "bias", "norm": "norm", "lora": "lora"}.get(option, "all")
    if tune == "lora":
        add_lora(body, 4)
    chosen = tunable(body, tune)
    trainable = sum(p.numel() for p in body.parameters() if id(p) in chosen)
    total = sum(p.numel() for p in body.parameters())
    return f"{trainable / 1e6:.2f}M ({trainable / total:.1%})"


def accuracy(runs: list[dict]) -> float:
    return float(np.mean([r["balanced_accuracy"] for r in runs]))


def cell_table(rows: dict, cells: list[tuple[str, int]]) -> str:
    """Per cell (rows) and option (columns): mean test balanced accuracy +- std over seeds (one seed: its value)."""
    lines = ["| cell | " + " | ".join(OPTIONS) + " |", "|---" * (len(OPTIONS) + 1) + "|"]
    for data, size in cells:
        values = [[r["balanced_accuracy"] for r in rows[(data, size, option)]] for option in OPTIONS]
        shown = [f"{np.mean(v):.3f} +- {np.std(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}" for v in values]  # one seed: no spread
        lines.append(f"| {data}@{size} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def summary_table(rows: dict, cells: list[tuple[str, int]]) -> str:
    """Per option: the mean over the cells up to 30 images per class, then over each larger size's
    cells, each with its difference to LP-FT and the standard error of that difference across
    cells (a gain beyond 2 standard errors is beyond the noise); time, trainable share, peak memory."""
    groups = {"<= 30": [c for c in cells if c[1] <= SEEDED_SIZES]}
    groups.update({str(size): [c for c in cells if c[1] == size] for size in sorted({c[1] for c in cells if c[1] > SEEDED_SIZES})})
    groups = {name: group for name, group in groups.items() if group}
    header = [f"{name} per class ({len(group)} cell{'s' * (len(group) > 1)}): mean (vs LP-FT +- s.e.)"
              for name, group in groups.items()]  # fmt: skip
    lines = ["| option | " + " | ".join(header) + " | network s | trainable | peak RSS |", "|---" * (len(groups) + 4) + "|"]
    for option in OPTIONS:
        columns = []
        for group in groups.values():
            gains = [100 * (accuracy(rows[(*c, option)]) - accuracy(rows[(*c, "LP-FT")])) for c in group]
            error = f" +- {np.std(gains, ddof=1) / np.sqrt(len(gains)):.2f}" if len(gains) > 1 else ""  # one cell: no spread
            columns.append(f"{np.mean([accuracy(rows[(*c, option)]) for c in group]):.4f} ({np.mean(gains):+.2f}{error})")
        runs = [r for c in cells for r in rows[(*c, option)]]
        lines.append(f"| {option} | " + " | ".join(columns) + f" | {np.mean([r['network_seconds'] for r in runs]):.1f} | "
                     f"{trainable_share(option)} | {np.mean([r['peak_rss_mb'] for r in runs]):.0f} MB |")  # fmt: skip
    return "\n".join(lines)


def finished(out: Path) -> dict:
    """Every cell in ``out`` whose runs all finished: {(data, size, option): [metrics per seed]}."""
    rows = {}
    for size in sorted({int(folder.name.rpartition("@")[2]) for folder in out.glob("*@*")}):
        for data in DATA:
            seeds = SEEDS if size <= SEEDED_SIZES else SEEDS[:1]
            paths = {o: [out / f"{data}@{size}" / f"{o}-seed{seed}" / "metrics.json" for seed in seeds] for o in OPTIONS}
            if all(path.exists() for option in paths.values() for path in option):
                rows.update({(data, size, o): [json.loads(path.read_text()) for path in ps] for o, ps in paths.items()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/finetune-options")
    parser.add_argument("--cache-dir")
    parser.add_argument("--data", nargs="+", default=list(DATA))
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    parser.add_argument("--report", action="store_true", help="only print the tables of the finished cells")
    args = parser.parse_args()
    out = Path(args.out)
    for size in [] if args.report else args.sizes:
        for data in args.data:
            for option in OPTIONS:
                seeds = SEEDS if size <= SEEDED_SIZES else SEEDS[:1]
                runs = [run(data, size, seed, option, out, args.cache_dir) for seed in seeds]
                print(f"{data}@{size} {option}: {accuracy(runs):.4f}", flush=True)
    rows = finished(out)  # the tables cover every finished cell in out, this call's and earlier ones
    cells = sorted({(data, size) for data, size, _ in rows}, key=lambda c: (c[1], DATA.index(c[0])))
    print(cell_table(rows, cells), summary_table(rows, cells), sep="\n\n")


if __name__ == "__main__":
    main()
