"""Speed and memory benchmarks: transferlab's paths against references, measured side by side.

Each benchmark runs transferlab and its reference in this one process (or in child processes for
peak memory) and prints the ratio; ``--markdown FILE`` appends a table. Absolute times on a
shared 2-core machine drift by +-30%; the ratios are what to read.

    python benchmarks/speed.py [--only head-cache,extraction,jpeg-decode,finetune-step,memory] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from transferlab.config import TrainConfig
from transferlab.data import per_class_subset, split_dataset
from transferlab.datasets import load_dataset
from transferlab.datasets.skimage_files import skimage_data_dir
from transferlab.features import DecodedImages, FeatureCache, cached_features, predict_pixels, to_unit_float
from transferlab.hardware import this_cpu
from transferlab.heads import make_head
from transferlab.images import open_image, resize_center_crop
from transferlab.metrics import evaluate_logits
from transferlab.sources import build_backbone
from transferlab.surgery import TransferModel, body_at, freeze
from transferlab.trainer.loops import fit_network
from transferlab.trainer.network import setup_network
from trained_head import HeadTraining, fit_head, trained_head_settings

ROWS: list[tuple[str, str, str, str, str]] = []


def report(name: str, ours: str, reference: str, ratio: float, goal: str) -> None:
    ROWS.append((name, ours, reference, f"{ratio:.2f}", goal))
    print(f"{name}: transferlab {ours} | reference {reference} | ratio {ratio:.2f} (goal {goal})", flush=True)


def fashion_splits(per_class: int):
    dataset = load_dataset("fashion-mnist")
    return split_dataset(dataset, samples_per_class=per_class, seed=0)


def lite0_model(num_classes: int = 10) -> TransferModel:
    backbone = build_backbone("efficientnet_lite0")
    torch.manual_seed(0)
    return TransferModel(freeze(body_at(backbone)), make_head(1280, num_classes), backbone.preprocessing)


# --------------------------------------------------------------------------------------------


def bench_head_cache(resolution: int = 112, epochs: int = 10) -> None:
    """head for 10 epochs: features cached once vs. the frozen backbone run in every epoch."""
    splits = fashion_splits(100)
    settings = trained_head_settings(TrainConfig(data="fashion-mnist", strategy="head"), epochs)

    model = lite0_model()
    extractor = nn.Sequential(model.normalize, model.body)
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        cache = FeatureCache(cache_dir)
        train, _ = cached_features(extractor, {"model": "bench"}, splits.train, resolution, cache)
        val, _ = cached_features(extractor, {"model": "bench"}, splits.val, resolution, cache)
        history = fit_head(model.head, train.values, splits.train.labels, val.values, splits.val.labels, settings)
        ours = time.perf_counter() - start
    ours_acc = min(history, key=lambda r: r["val_loss"])["val_accuracy"]

    # The usual loop (PyTorch fine-tuning tutorial, Keras, fastai): every epoch decodes every image
    # and runs the frozen backbone again; same head, optimizer, schedule and best-epoch choice.
    model = lite0_model()
    model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    generator = torch.Generator().manual_seed(0)
    train_set, val_set = DecodedImages(splits.train, resolution), DecodedImages(splits.val, resolution)
    best = (float("inf"), 0.0)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for batch_indices in torch.randperm(len(train_set), generator=generator).split(settings.batch_size):
            pixels = torch.stack([train_set[i][0] for i in batch_indices])
            labels = torch.as_tensor(splits.train.labels[batch_indices.numpy()])
            loss = nn.functional.cross_entropy(model(to_unit_float(pixels)), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(to_unit_float(p)) for p, _ in torch.utils.data.DataLoader(val_set, batch_size=64)])
        val_loss, val_acc = evaluate_logits(logits, torch.as_tensor(splits.val.labels))
        best = min(best, (val_loss, val_acc))
    reference = time.perf_counter() - start
    report(f"head, {epochs} epochs, 1000+1000 images at {resolution} px", f"{ours:.1f} s (val acc {ours_acc:.4f})",
           f"{reference:.1f} s (val acc {best[1]:.4f})", reference / ours, ">= 8, accuracy within 0.01")


@contextlib.contextmanager
def _neighbour(busy: bool):
    """Another process spinning on a core while the block runs (``busy``), as on a shared machine."""
    spinning = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        yield
    finally:
        if spinning:
            spinning.kill()


def bench_head_threads(images: int = 120, classes: int = 10, width: int = 1280) -> None:
    """A head's fit on a small labelled set (features of Lite0's width; the min-steps rule makes it
    hundreds of tiny steps), on one thread (as ``fit_head`` runs) against the two PyTorch would use,
    with the other core idle and with it busy (another process spinning there, as on a shared machine)."""
    rng = np.random.default_rng(0)
    train_x, val_x = (rng.normal(size=(n, width)).astype(np.float32) for n in (images, classes))
    train_y, val_y = np.arange(images) % classes, np.arange(classes)
    settings = HeadTraining(epochs=40, lr=1e-3)

    def timed(fit) -> float:
        torch.manual_seed(0)
        start = time.perf_counter()
        fit(make_head(width, classes), train_x, train_y, val_x, val_y, settings)
        return time.perf_counter() - start

    threads = torch.get_num_threads()
    for neighbour in ("idle", "busy"):
        with _neighbour(neighbour == "busy"):
            ours = timed(fit_head)
            reference = timed(fit_head.__wrapped__)  # the same fit on PyTorch's threads
        report(f"head fit, {images} images, other core {neighbour}", f"{ours:.2f} s (1 thread)",
               f"{reference:.2f} s ({threads} threads)", reference / ours, ">= 0.9 idle, >> 1 busy")


_SPIN_PROBE = """
import json, sys, time
import timm, torch
torch.manual_seed(0)
model = timm.create_model("efficientnet_lite0", num_classes=10).to(memory_format=torch.channels_last)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
x = torch.randn(64, 3, 112, 112).contiguous(memory_format=torch.channels_last)
y = torch.arange(64) % 10
def step():
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
step()  # warm-up
start = time.perf_counter()
for _ in range(6):
    step()
train = 6 * 64 / (time.perf_counter() - start)
model.eval()
with torch.inference_mode():
    model(x)
    start = time.perf_counter()
    for _ in range(10):
        model(x)
    infer = 10 * 64 / (time.perf_counter() - start)
print(json.dumps({"train": train, "infer": infer}))
"""


def _spin_rates(spin_count: str | None, neighbour: str) -> list[dict]:
    """Training and inference images per second of Lite0 (112 px, batch 64) in fresh processes whose
    OpenMP threads spin ``spin_count`` rounds (None: libgomp's default), beside an idle core, a
    spinning process, or a second such process (``neighbour``: idle, busy, twin)."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update({"GOMP_SPINCOUNT": spin_count} if spin_count else {})
    with _neighbour(neighbour == "busy"):
        probes = [subprocess.Popen([sys.executable, "-c", _SPIN_PROBE], env=env, stdout=subprocess.PIPE, text=True)
                  for _ in range(2 if neighbour == "twin" else 1)]  # fmt: skip
        return [json.loads(probe.communicate()[0].strip().splitlines()[-1]) for probe in probes]


def bench_spin() -> None:
    """How long the OpenMP threads spin before sleeping (``transferlab.threads``): the spin count
    transferlab sets against libgomp's default, with the other core idle, busy with another process,
    and with two such runs at once (each run's rate)."""
    from transferlab.threads import SPIN_COUNT

    for neighbour in ("idle", "busy", "twin"):
        ours, reference = _mean_rates(_spin_rates(SPIN_COUNT, neighbour)), _mean_rates(_spin_rates(None, neighbour))
        report(f"OpenMP spin count {SPIN_COUNT} vs libgomp's default, other core {neighbour}",
               f"train {ours['train']:.1f} / infer {ours['infer']:.1f} img/s",
               f"train {reference['train']:.1f} / infer {reference['infer']:.1f} img/s",
               ours["train"] / reference["train"], ">= 0.9 idle, > 1.5 busy or twin")  # fmt: skip


def _mean_rates(runs: list[dict]) -> dict:
    return {key: sum(run[key] for run in runs) / len(runs) for key in ("train", "infer")}


def bench_extraction(resolution: int, count: int = 1000) -> None:
    """Feature extraction end to end (decode, resize, normalize, forward, write cache) vs. bare forward."""
    images = per_class_subset(load_dataset("fashion-mnist").test, count // 10)
    model = lite0_model()
    extractor = nn.Sequential(model.normalize, model.body)
    batches = [torch.stack([DecodedImages(images, resolution)[i][0] for i in range(s, min(s + 64, len(images)))])
               for s in range(0, len(images), 64)]  # fmt: skip
    tensors = [to_unit_float(b) for b in batches]
    extractor.eval().to(memory_format=torch.channels_last)
    with torch.inference_mode():
        extractor(tensors[0])  # warm-up for both
        start = time.perf_counter()
        for x in tensors:
            extractor(x)
        bare = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        cached_features(extractor, {"model": "bench"}, images, resolution, FeatureCache(cache_dir))
        ours = time.perf_counter() - start
    report(f"feature extraction, {count} images at {resolution} px", f"{count / ours:.0f} img/s",
           f"{count / bare:.0f} img/s (forward only)", bare / ours, ">= 0.85")


PHOTOGRAPHS = ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg")  # scikit-image's


def _camera_jpegs(folder: Path, count: int, size: tuple[int, int] = (4032, 3024)) -> list[Path]:
    """``count`` JPEGs at a phone camera's 12 megapixels: scikit-image's colour photographs enlarged,
    with a sensor's grain (sigma 3 levels), saved at quality 90."""
    rng, paths = np.random.default_rng(0), []
    for i in range(count):
        photo = Image.open(skimage_data_dir() / PHOTOGRAPHS[i % len(PHOTOGRAPHS)]).convert("RGB")
        pixels = np.asarray(photo.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
        pixels += rng.normal(0, 3, pixels.shape).astype(np.float32)
        paths.append(folder / f"{i:03d}.jpg")
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(paths[-1], quality=90)
    return paths


def bench_jpeg_decode(resolution: int = 224, count: int = 30) -> None:
    """Decoding camera photographs for a pass at ``resolution``: libjpeg's reduced scale (what every
    pass does) vs. a full decode then the same resize, image by image alternately."""
    with tempfile.TemporaryDirectory() as folder:
        paths = _camera_jpegs(Path(folder), count)
        megabytes = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
        ours = reference = 0.0
        for path in paths:
            start = time.perf_counter()
            resize_center_crop(open_image(path, resolution), resolution)
            ours += time.perf_counter() - start
            start = time.perf_counter()
            resize_center_crop(open_image(path), resolution)
            reference += time.perf_counter() - start
    report(f"decode and resize {count} camera JPEGs (4032 x 3024, {megabytes:.1f} MB each) to {resolution} px",
           f"{count / ours:.1f} img/s", f"{count / reference:.1f} img/s (full decode)", reference / ours, "> 1")


def bench_finetune_step(resolution: int = 112, count: int = 512, batch_size: int = 32) -> None:
    """One fine-tuning epoch of the engine vs. a bare forward+backward+AdamW loop on tensors in memory."""
    splits = fashion_splits(count // 10)
    pixels = torch.stack([DecodedImages(splits.train, resolution)[i][0] for i in range(len(splits.train))])
    labels = torch.as_tensor(splits.train.labels)
    config = TrainConfig(data="fashion-mnist", strategy="finetune", epochs=1, batch_size=batch_size, layer_decay=1.0,
                         freeze_bn=False)  # the bare loop's BatchNorm: statistics move  # fmt: skip
    warm = lite0_model().train().to(memory_format=torch.channels_last)  # both sides timed warm: oneDNN builds its
    nn.functional.cross_entropy(warm(to_unit_float(pixels[:batch_size])), labels[:batch_size]).backward()  # kernels once

    model = lite0_model()
    settings, groups = setup_network(model, config)  # the product's whole-network set-up
    start = time.perf_counter()
    fit_network(model, groups, pixels, labels, pixels[:1], labels[:1], settings)
    ours = time.perf_counter() - start

    model = lite0_model()
    model.body.requires_grad_(True)
    model.train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs = [to_unit_float(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]
    targets = [labels[i : i + batch_size] for i in range(0, len(pixels), batch_size)]
    start = time.perf_counter()
    for x, y in zip(inputs, targets):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    bare = time.perf_counter() - start
    report(f"fine-tuning, {count} images at {resolution} px, batch {batch_size}", f"{count / ours:.1f} img/s",
           f"{count / bare:.1f} img/s (bare loop)", bare / ours, ">= 0.9")


def _extract_in_child(count: int, resolution: int) -> dict:
    code = f"""
import json, tempfile, time
from transferlab.datasets import load_dataset
from torch import nn
from benchmarks.speed import lite0_model
from transferlab.features import FeatureCache, cached_features
images = load_dataset("fashion-mnist").train.subset(list(range({count})))
model = lite0_model()
with tempfile.TemporaryDirectory() as d:
    start = time.perf_counter()
    cached_features(nn.Sequential(model.normalize, model.body), {{"model": "bench"}}, images, {resolution}, FeatureCache(d))
    seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: ru_maxrss survives execve and would report the parent's peak.
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"seconds": seconds, "peak_mb": peak_kb / 1024}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1], env={"TQDM_DISABLE": "1", "PATH": ""})  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_memory(resolution: int = 32) -> None:
    """Peak resident memory and time of extracting 6,000 vs 60,000 images (streamed to the cache)."""
    small, large = _extract_in_child(6000, resolution), _extract_in_child(60000, resolution)
    report(f"extraction peak memory, 60,000 vs 6,000 images at {resolution} px", f"{large['peak_mb']:.0f} MB",
           f"{small['peak_mb']:.0f} MB", large["peak_mb"] / small["peak_mb"], "<= 1.5")
    report(f"extraction time, 60,000 vs 6,000 images at {resolution} px", f"{large['seconds']:.1f} s",
           f"{small['seconds']:.1f} s", large["seconds"] / small["seconds"], "about 10")


ALLOCATORS = {
    "glibc malloc (default)": {},
    "glibc, mmap off + no trim": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"},
    "jemalloc (libjemalloc2)": {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},
    "tcmalloc (libtcmalloc-minimal4)": {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"},
}
_ALLOCATOR_PROBE = """
import json, time, torch
from torch import nn
from benchmarks.speed import lite0_model
from transferlab.features import to_unit_float
model = lite0_model()
model.body.requires_grad_(True)
model.to(memory_format=torch.channels_last)
x = to_unit_float((torch.rand(256, 3, 112, 112) * 255).to(torch.uint8))
y = torch.arange(256) % 10
with torch.inference_mode():
    model.eval()(x[:64])
    start = time.perf_counter()
    for chunk in x.split(64):
        model(chunk)
    inference = 256 / (time.perf_counter() - start)
model.train()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
steps = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]
for i, (xb, yb) in enumerate([steps[0]] + steps):
    if i == 1:
        start = time.perf_counter()
    loss = nn.functional.cross_entropy(model(xb), yb)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(json.dumps({"inference": inference, "training": 256 / (time.perf_counter() - start)}))
"""


def bench_allocator() -> None:
    """EfficientNet-Lite0 at 112 px, inference and training steps, under each allocator (child processes)."""
    import os

    results = {}
    for name, env in ALLOCATORS.items():
        preload = env.get("LD_PRELOAD")
        if preload and not Path(preload).exists():
            print(f"{name}: not installed, skipped")
            continue
        result = subprocess.run([sys.executable, "-c", _ALLOCATOR_PROBE], capture_output=True, text=True, check=True,
                                cwd=Path(__file__).resolve().parents[1], env={**os.environ, **env})  # fmt: skip
        results[name] = json.loads(result.stdout.strip().splitlines()[-1])
    base = results["glibc malloc (default)"]
    for name, r in results.items():
        if r is base:
            continue
        report(f"allocator: {name} vs glibc default, 112 px", f"{r['inference']:.0f} / {r['training']:.1f} img/s",
               f"{base['inference']:.0f} / {base['training']:.1f} img/s",
               r["training"] / base["training"], "inference / training; ratio of training, > 1 is faster")  # fmt: skip


_STEP_PROBE = """
import json, sys, time, torch
from torch import nn
from transferlab.sources import build_backbone
from transferlab.trainer.loops import tunable
from transferlab.trainer.lora import add_lora
tune, plan, resolution, batch, timed = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
def peak_mb():  # VmHWM, not ru_maxrss: ru_maxrss survives execve and would report the parent's peak
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
torch.manual_seed(0)
body = build_backbone("efficientnet_lite0", pretrained=False).model
body.set_grad_checkpointing(plan == "checkpoint")
if tune == "peft-lora":
    import peft
    targets = [name for name, m in body.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
    body = peft.inject_adapter_in_model(peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets), body)
elif tune == "lora":
    add_lora(body, 4)
chosen = tunable(body, "lora" if tune == "peft-lora" else tune)
for p in body.parameters():
    p.requires_grad_(id(p) in chosen)
head = nn.Linear(body.num_features, 10)
body.train()
for m in body.modules():
    if isinstance(m, nn.BatchNorm2d):
        m.eval()
optimizer = torch.optim.AdamW([p for p in body.parameters() if p.requires_grad] + list(head.parameters()), lr=1e-4)
x = torch.rand(batch, 3, resolution, resolution).contiguous(memory_format=torch.channels_last)
y = torch.arange(batch) % 10
passes = 2 if plan == "accumulate" else 1
loaded = peak_mb()
for step in range(1 + timed):  # a warm-up step, then the timed ones
    if step == 1:
        start = time.perf_counter()
    optimizer.zero_grad()
    for xb, yb in zip(x.chunk(passes), y.chunk(passes)):
        (nn.functional.cross_entropy(head(body(xb)), yb) / passes).backward()
    optimizer.step()
print(json.dumps({"step_mb": peak_mb() - loaded, "rate": timed * batch / (time.perf_counter() - start)}))
"""


def _step_in_child(tune: str, plan: str, resolution: int, batch: int, timed: int) -> dict:
    """One fine-tuning set-up of EfficientNet-Lite0 in its own process: the peak resident memory a
    step adds over the loaded model, and images per second over ``timed`` steps after a warm-up.
    ``tune``: a ``--tune`` mode or ``peft-lora``; ``plan``: ``plain``, ``accumulate`` (two passes a
    step) or ``checkpoint`` (activation checkpointing)."""
    import os

    result = subprocess.run([sys.executable, "-c", _STEP_PROBE, tune, plan, str(resolution), str(batch), str(timed)],
                            capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1],
                            env={**os.environ, "TQDM_DISABLE": "1"})  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])


def _step_summary(result: dict) -> str:
    return f"{result['step_mb']:.0f} MB, {result['rate']:.1f} img/s"


def bench_tune(resolution: int = 160, batch: int = 32) -> None:
    """A fine-tuning step of EfficientNet-Lite0 per ``--tune`` mode, each in its own process: the
    peak resident memory it adds over the loaded model, and images per second; LoRA also through
    ``peft`` (its Conv2d LoRA: two extra convolutions per layer) as the reference."""
    results = {tune: _step_in_child(tune, "plain", resolution, batch, 3) for tune in ("all", "bias", "norm", "lora", "peft-lora")}
    for tune in ("bias", "norm", "lora"):
        report(f"fine-tuning step memory, {resolution} px, batch {batch}: --tune {tune} vs all", _step_summary(results[tune]),
               _step_summary(results["all"]), results[tune]["step_mb"] / results["all"]["step_mb"], "< 1 (less memory)")  # fmt: skip
    report(f"LoRA step, {resolution} px, batch {batch}: transferlab (weight update) vs peft (extra convolutions)",
           _step_summary(results["lora"]), _step_summary(results["peft-lora"]),
           results["lora"]["rate"] / results["peft-lora"]["rate"], "speed ratio; > 1 is faster")  # fmt: skip


def bench_memory_plans(resolution: int = 224) -> None:
    """A fine-tuning step of 64 images at 224 px three ways, each in its own process: one pass, two
    accumulated passes of 32 (what ``--max-memory`` plans), and one pass with activation
    checkpointing (timm's ``set_grad_checkpointing``): step memory over the loaded model, img/s."""
    results = {plan: _step_in_child("all", plan, resolution, 64, 2) for plan in ("plain", "accumulate", "checkpoint")}
    for plan, name in (("accumulate", "2 accumulated passes of 32"), ("checkpoint", "activation checkpointing")):
        report(f"fine-tuning step of 64 images at {resolution} px: {name} vs one pass", _step_summary(results[plan]),
               _step_summary(results["plain"]), results[plan]["step_mb"] / results["plain"]["step_mb"],
               f"memory ratio; speed ratio {results[plan]['rate'] / results['plain']['rate']:.2f}")  # fmt: skip


def bench_onnxruntime(resolution: int = 112, count: int = 512) -> None:
    """Inference of the whole transfer model as ``predict`` runs it (batches of 64 decoded images):
    the ONNX Runtime engine vs PyTorch (inference_mode, channels-last), fastest of 3 interleaved rounds."""
    from transferlab.engines import onnx_runner

    model = lite0_model().eval()
    pixels = (torch.rand(count, 3, resolution, resolution) * 255).to(torch.uint8)
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        exported = onnx_runner(model, resolution, Path(directory) / "model.onnx")
        export = time.perf_counter() - start  # what --engine auto weighs against the time saved
        engines = {"onnxruntime": exported, "pytorch": model.to(memory_format=torch.channels_last)}
        seconds = {name: float("inf") for name in engines}
        for name, engine in engines.items():
            predict_pixels(engine, pixels[:64])  # warm-up
        for _ in range(3):
            for name, engine in engines.items():
                start = time.perf_counter()
                predict_pixels(engine, pixels)
                seconds[name] = min(seconds[name], time.perf_counter() - start)
    report(f"inference engine, {resolution} px: ONNX Runtime vs PyTorch (export and load {export:.2f} s)",
           f"{count / seconds['onnxruntime']:.0f} img/s (ONNX Runtime)", f"{count / seconds['pytorch']:.0f} img/s (PyTorch)",
           seconds["pytorch"] / seconds["onnxruntime"], "> 1 means ONNX Runtime is faster")  # fmt: skip


def bench_onnxruntime_spin(resolution: int = 224, count: int = 128) -> None:
    """The ONNX Runtime engine as transferlab opens it (its threads sleep between runs) against the
    same model with ONNX Runtime's default spinning, with the other core idle and busy with another
    process; images fed as ``predict`` feeds them."""
    import onnxruntime as ort

    from transferlab.engines import OnnxRunner, onnx_runner

    pixels = (torch.rand(count, 3, resolution, resolution) * 255).to(torch.uint8)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "model.onnx"
        ours = onnx_runner(lite0_model().eval(), resolution, path)
        spinning = OnnxRunner(path)
        spinning.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # the defaults
        for neighbour in ("idle", "busy"):
            rates = {}
            with _neighbour(neighbour == "busy"):
                for name, runner in (("ours", ours), ("spinning", spinning)):
                    predict_pixels(runner, pixels[:8])  # warm-up
                    start = time.perf_counter()
                    predict_pixels(runner, pixels)
                    rates[name] = count / (time.perf_counter() - start)
            report(f"ONNX Runtime, {resolution} px, threads sleeping vs spinning, other core {neighbour}",
                   f"{rates['ours']:.0f} img/s", f"{rates['spinning']:.0f} img/s", rates["ours"] / rates["spinning"],
                   ">= 0.9 idle, > 1.2 busy")  # fmt: skip


def bench_int8(resolution: int = 112, count: int = 1000, calibration_images: int = 200) -> None:
    """The frozen body's features through ONNX Runtime, int8 (static, calibrated on 200 training
    images) vs float32, side by side on the same decoded images; then a head on each."""
    from transferlab.engines import onnx_runner

    splits = fashion_splits(100)
    model = lite0_model()
    extractor = nn.Sequential(model.normalize, model.body).eval()
    decode = lambda images: torch.stack([DecodedImages(images, resolution)[i][0] for i in range(len(images))])  # noqa: E731
    train, val = decode(splits.train), decode(splits.val)
    with tempfile.TemporaryDirectory() as directory:
        engines = {
            "float32": onnx_runner(extractor, resolution, Path(directory) / "fp32.onnx"),
            "int8": onnx_runner(extractor, resolution, Path(directory) / "int8.onnx",
                                to_unit_float(train[:calibration_images])),
        }  # fmt: skip
        seconds, features = {name: float("inf") for name in engines}, {}
        for name, engine in engines.items():
            predict_pixels(engine, train[:64])  # warm-up
        for _ in range(3):  # interleaved rounds, the fastest of each: a noisy machine slows some rounds, not all
            for name, engine in engines.items():
                start = time.perf_counter()
                features[name] = predict_pixels(engine, torch.cat([train, val])).numpy()  # as extraction runs it
                seconds[name] = min(seconds[name], time.perf_counter() - start)
    accuracy = {}
    n = len(splits.train)
    for name, values in features.items():
        torch.manual_seed(0)
        head = make_head(values.shape[1], 10)
        history = fit_head(head, values[:n], splits.train.labels, values[n:], splits.val.labels,
                           trained_head_settings(TrainConfig(data="fashion-mnist", strategy="head")))
        accuracy[name] = min(history, key=lambda r: r["val_loss"])["val_accuracy"]
    images = len(train) + len(val)
    report(f"frozen-body extraction, {resolution} px: ONNX Runtime int8 vs float32",
           f"{images / seconds['int8']:.0f} img/s, head val acc {accuracy['int8']:.4f}",
           f"{images / seconds['float32']:.0f} img/s, head val acc {accuracy['float32']:.4f}",
           seconds["float32"] / seconds["int8"], ">= 1.8x, accuracy within 0.5 points")  # fmt: skip


def bench_bf16(resolution: int = 112, count: int = 256, batch_size: int = 32) -> None:
    """``torch.autocast("cpu", dtype=torch.bfloat16)`` vs float32, side by side: a training step
    (forward, backward, AdamW) and inference of EfficientNet-Lite0, and how far bf16 features are
    from the float32 ones (mean cosine similarity)."""
    pixels = (torch.rand(count, 3, resolution, resolution) * 255).to(torch.uint8)
    splits = fashion_splits(count // 10)
    real = torch.stack([DecodedImages(splits.train, resolution)[i][0] for i in range(len(splits.train))])
    labels = torch.randint(0, 10, (count,))
    seconds, features = {}, {}
    for name, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
        model = lite0_model().train().to(memory_format=torch.channels_last)
        model.body.requires_grad_(True)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        context = (lambda: torch.autocast("cpu", dtype=dtype)) if dtype else contextlib.nullcontext
        start = time.perf_counter()
        for i in range(0, count, batch_size):
            with context():
                loss = nn.functional.cross_entropy(model(to_unit_float(pixels[i : i + batch_size])), labels[i : i + batch_size])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds[f"train {name}"] = time.perf_counter() - start
        reference = lite0_model().eval()
        extractor = nn.Sequential(reference.normalize, reference.body)
        start = time.perf_counter()
        with torch.inference_mode(), context():
            features[name] = torch.cat([extractor(to_unit_float(chunk)).float() for chunk in real.split(64)])
        seconds[f"infer {name}"] = time.perf_counter() - start
    similarity = float(nn.functional.cosine_similarity(features["float32"], features["bfloat16"]).mean())
    report(f"training step, {resolution} px, bf16 autocast vs float32", f"{count / seconds['train bfloat16']:.1f} img/s",
           f"{count / seconds['train float32']:.1f} img/s", seconds["train float32"] / seconds["train bfloat16"],
           "adopt if faster with the accuracy held")  # fmt: skip
    report(f"inference, {resolution} px, bf16 autocast vs float32 (feature cosine {similarity:.4f})",
           f"{len(real) / seconds['infer bfloat16']:.0f} img/s", f"{len(real) / seconds['infer float32']:.0f} img/s",
           seconds["infer float32"] / seconds["infer bfloat16"], "adopt if faster with the accuracy held")  # fmt: skip


def _matmul_rate(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """Sustained operations per second of a square matrix product (float32 ``@``, int8 ``torch._int_mm``)."""
    if dtype == torch.int8:
        a, b = (torch.randint(-128, 127, (size, size), dtype=torch.int8) for _ in range(2))
        product = torch._int_mm
    else:
        a, b = torch.rand(size, size), torch.rand(size, size)
        product = torch.mm
    product(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        product(a, b)
    return repeats * 2 * size**3 / (time.perf_counter() - start)


def _flops_per_image(model: nn.Module, resolution: int) -> int:
    """Multiply-adds x 2 of every convolution and Linear layer for one image."""
    total = [0]

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            total[0] += 2 * output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, nn.Linear):
            total[0] += 2 * output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.rand(1, 3, resolution, resolution))
    for hook in hooks:
        hook.remove()
    return total[0]


def bench_limit(resolution: int = 112, count: int = 512, batch_size: int = 32) -> None:
    """The machine's limit (sustained matrix-product rate, float32 and int8) and the share of it that
    extraction and a training step reach, from the model's FLOPs per image."""
    from transferlab.engines import onnx_runner

    fp32, int8 = _matmul_rate(torch.float32), _matmul_rate(torch.int8)
    model = lite0_model()
    flops = _flops_per_image(model, resolution)
    pixels = (torch.rand(count, 3, resolution, resolution) * 255).to(torch.uint8)
    extractor = nn.Sequential(model.normalize, model.body).eval().to(memory_format=torch.channels_last)
    predict_pixels(extractor, pixels[:64])
    start = time.perf_counter()
    predict_pixels(extractor, pixels)
    extract = count / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as directory:
        quantized = onnx_runner(extractor, resolution, Path(directory) / "int8.onnx", to_unit_float(pixels[:128]))
        predict_pixels(quantized, pixels[:64])
        start = time.perf_counter()
        predict_pixels(quantized, pixels)
        extract_int8 = count / (time.perf_counter() - start)
    model.train().body.requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters())
    labels = torch.randint(0, 10, (count,))
    start = time.perf_counter()
    for i in range(0, count, batch_size):
        loss = nn.functional.cross_entropy(model(to_unit_float(pixels[i : i + batch_size])), labels[i : i + batch_size])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    train = count / (time.perf_counter() - start)
    print(f"limit: float32 matrix product {fp32 / 1e9:.0f} GFLOP/s, int8 {int8 / 1e9:.0f} GOP/s; "
          f"EfficientNet-Lite0 at {resolution} px: {flops / 1e9:.3f} GFLOP per image forward", flush=True)
    report(f"share of the float32 limit: extraction, {resolution} px", f"{extract * flops / 1e9:.1f} GFLOP/s ({extract:.0f} img/s)",
           f"{fp32 / 1e9:.0f} GFLOP/s (2048 x 2048 matmul)", extract * flops / fp32, "as high as it goes")  # fmt: skip
    report(f"share of the int8 limit: int8 extraction (ONNX Runtime), {resolution} px",
           f"{extract_int8 * flops / 1e9:.1f} GOP/s ({extract_int8:.0f} img/s)", f"{int8 / 1e9:.0f} GOP/s (torch._int_mm)",
           extract_int8 * flops / int8, "as high as it goes")  # fmt: skip
    report(f"share of the float32 limit: training step (3 x forward FLOPs), {resolution} px",
           f"{3 * train * flops / 1e9:.1f} GFLOP/s ({train:.0f} img/s)", f"{fp32 / 1e9:.0f} GFLOP/s",
           3 * train * flops / fp32, "as high as it goes")  # fmt: skip


BENCHMARKS = {
    "head-cache": bench_head_cache,
    "head-threads": bench_head_threads,
    "spin": bench_spin,
    "extraction": lambda: (bench_extraction(112), bench_extraction(224, count=500)),
    "finetune-step": bench_finetune_step,
    "jpeg-decode": bench_jpeg_decode,
    "memory": bench_memory,
    "allocator": bench_allocator,
    "onnxruntime": lambda: (bench_onnxruntime(112), bench_onnxruntime(224, count=256)),
    "onnxruntime-spin": bench_onnxruntime_spin,
    "int8": lambda: (bench_int8(112), bench_int8(224)),
    "bf16": bench_bf16,
    "tune": bench_tune,
    "memory-plans": bench_memory_plans,
    "limit": bench_limit,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=",".join(BENCHMARKS))
    parser.add_argument("--markdown", help="append a table of the results to this file")
    args = parser.parse_args()
    torch.manual_seed(0)
    cpu = this_cpu()  # the ratios depend on the machine's kind: said first
    print(f"CPU: {cpu.kind} ({', '.join(f for f in ('avx2', 'avx512', 'vnni', 'avx512_bf16', 'amx') if getattr(cpu, f))})",
          flush=True)  # fmt: skip
    if args.markdown:
        with open(args.markdown, "a") as handle:
            handle.write(f"CPU: {cpu.kind}.\n\n")
    for name in args.only.split(","):
        BENCHMARKS[name]()
    if args.markdown:
        lines = ["| benchmark | transferlab | reference | ratio | goal |", "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in ROWS]
        with open(args.markdown, "a") as handle:
            handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
