"""What the ensemble costs at prediction (issue 22): images per second and peak memory of an ensemble
bundle beside each of its members alone, measured side by side in one run, each model in a fresh
process (so peak memory is its own), on the same images, with the same engine.

    transferlab train fashion-mnist --resolution 112 --strategy ensemble --samples-per-class 100 --out runs/ensemble
    python benchmarks/ensemble_cost.py runs/ensemble/model --images 512
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

MEASURE = r"""
import json, resource, sys, time
import torch
import transferlab as tl
model = tl.load(sys.argv[1], engine=sys.argv[3])
torch.manual_seed(0)
images = torch.rand(int(sys.argv[2]), 3, model.resolution, model.resolution)
run = model._runner
with torch.no_grad():
    run(images[:64])  # warm-up
    started = time.perf_counter()
    for chunk in images.split(64):
        run(chunk)
    seconds = time.perf_counter() - started
weights = sum(p.numel() * p.element_size() for p in model.network.state_dict().values())
print(json.dumps({"images_per_second": len(images) / seconds, "peak_rss_mb": resource.getrusage(
    resource.RUSAGE_SELF).ru_maxrss / 1024, "weights_mb": weights / 2**20}))
"""


def measure(model_dir: Path, images: int, engine: str) -> dict:
    output = subprocess.run([sys.executable, "-c", MEASURE, str(model_dir), str(images), engine], check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="an ensemble bundle (OUT/model of --strategy ensemble)")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--engine", default="pytorch", choices=("pytorch", "onnxruntime"))
    args = parser.parse_args()
    meta = json.loads((args.model / "bundle.json").read_text())
    models = {"ensemble": args.model, **{m["folder"]: args.model / m["folder"] for m in meta["members"]}}
    results = {name: measure(path, args.images, args.engine) for name, path in models.items()}
    print(f"| model ({args.images} random images at {meta['preprocessing']['resolution']} px, {args.engine}) | "
          "images/s | peak memory | weights | ensemble's time / its | ensemble's memory / its |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    whole = results["ensemble"]
    for name, r in results.items():
        slower = r["images_per_second"] / whole["images_per_second"]
        heavier = whole["peak_rss_mb"] / r["peak_rss_mb"]
        print(f"| {name} | {r['images_per_second']:.0f} | {r['peak_rss_mb']:.0f} MB | {r['weights_mb']:.1f} MB | "
              f"{slower:.2f}x | {heavier:.2f}x |")


if __name__ == "__main__":
    main()
