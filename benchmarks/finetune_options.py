"""Each fine-tuning option against plain LP-FT on the data-set pool: test balanced accuracy (mean +-
std over seeds; each seed redraws the training subsample), time, trainable parameters and peak
resident memory (each run is its own `transferlab train` process).

Resumable: every finished run's metrics.json is reused.

    python benchmarks/finetune_options.py --out runs/finetune-options --cache-dir /tmp/options-cache
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
DATA = ("fashion-mnist", "digits", "animal-mnist", "orientation")
SIZES = (10,)
SEEDS = (0, 1, 2)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/finetune-options")
    parser.add_argument("--cache-dir")
    parser.add_argument("--data", nargs="+", default=list(DATA))
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    args = parser.parse_args()
    out = Path(args.out)
    rows = {}
    for data in args.data:
        for size in args.sizes:
            for option in OPTIONS:
                runs = [run(data, size, seed, option, out, args.cache_dir) for seed in SEEDS]
                rows[(data, size, option)] = runs
                print(f"{data}@{size} {option}: {np.mean([r['balanced_accuracy'] for r in runs]):.4f}", flush=True)
    print("| option | " + " | ".join(f"{d}@{s}" for d in args.data for s in args.sizes) + " | pool mean | vs LP-FT | "
          "network s | trainable | peak RSS |")  # fmt: skip
    print("|---" * (len(args.data) * len(args.sizes) + 6) + "|")
    base = np.mean([np.mean([r["balanced_accuracy"] for r in rows[(d, s, "LP-FT")]]) for d in args.data for s in args.sizes])
    for option in OPTIONS:
        cells, means = [], []
        for data in args.data:
            for size in args.sizes:
                values = [r["balanced_accuracy"] for r in rows[(data, size, option)]]
                means.append(np.mean(values))
                cells.append(f"{np.mean(values):.3f} +- {np.std(values):.3f}")
        runs = [r for d in args.data for s in args.sizes for r in rows[(d, s, option)]]
        print(f"| {option} | {' | '.join(cells)} | {np.mean(means):.4f} | {100 * (np.mean(means) - base):+.2f} | "
              f"{np.mean([r['network_seconds'] for r in runs]):.1f} | {trainable_share(option)} | "
              f"{np.mean([r['peak_rss_mb'] for r in runs]):.0f} MB |")  # fmt: skip


if __name__ == "__main__":
    main()
