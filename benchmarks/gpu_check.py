"""The GPU check (``make gpu-check``): the product's path on a CUDA GPU against the same on the CPU.

Trains ``head`` and ``finetune`` on Fashion-MNIST (100 training images per class, the full test
set) at 224 px on the GPU and on the CPU with the same seed, and compares their test accuracies
(they differ by the GPU's kernels and bfloat16 autocast only, so within a run's noise); then
images per second of frozen extraction and of a fine-tuning step, GPU against CPU, side by side.

    python benchmarks/gpu_check.py [--out runs/gpu-check] [--skip-cpu-training]

Prints a Markdown table and writes ``results.json`` into ``--out``. Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import transferlab as tl
from transferlab.config import TrainConfig
from transferlab.heads import make_head
from transferlab.surgery import TransferModel, body_at, freeze
from transferlab.trainer.loops import accumulate_gradients
from transferlab.trainer.network import setup_network

RESOLUTION = 224
STRATEGIES = ("head", "finetune")


def train(strategy: str, device: str, out: Path) -> dict:
    started = time.perf_counter()
    metrics = tl.train("fashion-mnist", strategy=strategy, samples_per_class=100, resolution=RESOLUTION, device=device,
                       out=str(out / f"{strategy}-{device.split(':')[0]}"), use_cache=False).metrics  # fmt: skip
    return {"test_accuracy": metrics["test_accuracy"], "seconds": time.perf_counter() - started,
            "device": metrics["device"], "engine": metrics.get("engine", {}).get("engine")}  # fmt: skip


def lite0(device: str) -> TransferModel:
    backbone = tl.build_backbone("efficientnet_lite0")
    return TransferModel(freeze(body_at(backbone)), make_head(1280, 10), backbone.preprocessing).to(device)


def extraction_rate(device: str, images: int) -> float:
    """Frozen forward passes (the product's run_batch), images per second."""
    from transferlab.features import run_batch

    model = lite0(device).eval()
    extractor = torch.nn.Sequential(model.normalize, model.body)
    pixels = (torch.rand(images, 3, RESOLUTION, RESOLUTION) * 255).to(torch.uint8)
    run_batch(extractor, pixels[:64])  # warm-up
    _sync(device)
    started = time.perf_counter()
    for chunk in pixels.split(64):
        run_batch(extractor, chunk)
    _sync(device)
    return images / (time.perf_counter() - started)


def step_rate(device: str, steps: int, batch: int = 32) -> float:
    """Fine-tuning steps (the product's set-up and accumulation), images per second."""
    model = lite0(device)
    config = TrainConfig(data="fashion-mnist", strategy="finetune", device=device, batch_size=batch)
    settings, groups = setup_network(model, config)
    optimizer = torch.optim.AdamW(groups)
    model.train()
    pixels = (torch.rand(batch, 3, RESOLUTION, RESOLUTION) * 255).to(torch.uint8)
    labels = torch.arange(batch) % 10
    for step in range(steps + 1):  # the first step warms up
        if step == 1:
            _sync(device)
            started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        accumulate_gradients(model, torch.arange(batch), pixels, labels, None, settings)
        optimizer.step()
    _sync(device)
    return steps * batch / (time.perf_counter() - started)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/gpu-check")
    parser.add_argument("--skip-cpu-training", action="store_true", help="compare speeds only (CPU training is slow)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU here (torch.cuda.is_available() is False); nothing to check.", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "runs": {}}
    for strategy in STRATEGIES:
        for device in ("cuda", *(() if args.skip_cpu_training else ("cpu",))):
            results["runs"][f"{strategy} {device}"] = train(strategy, device, out)
            print(f"{strategy} on {device}: {results['runs'][f'{strategy} {device}']}", flush=True)
    results["extraction img/s"] = {"cuda": extraction_rate("cuda", 4096), "cpu": extraction_rate("cpu", 256)}
    results["fine-tuning img/s"] = {"cuda": step_rate("cuda", 50), "cpu": step_rate("cpu", 3)}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"\n{results['gpu']}, torch {results['torch']}, {RESOLUTION} px\n")
    print("| measure | GPU | CPU | ratio |\n|---|---|---|---|")
    for strategy in STRATEGIES:
        gpu, cpu = results["runs"][f"{strategy} cuda"], results["runs"].get(f"{strategy} cpu")
        cpu_text = f"{cpu['test_accuracy']:.4f} ({cpu['seconds']:.0f} s)" if cpu else "-"
        ratio = f"{cpu['seconds'] / gpu['seconds']:.1f}x faster" if cpu else ""
        print(f"| `{strategy}` test accuracy (time) | {gpu['test_accuracy']:.4f} ({gpu['seconds']:.0f} s) | {cpu_text} | {ratio} |")
    for name in ("extraction img/s", "fine-tuning img/s"):
        gpu, cpu = results[name]["cuda"], results[name]["cpu"]
        print(f"| {name} | {gpu:.0f} | {cpu:.1f} | {gpu / cpu:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
