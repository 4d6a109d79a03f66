"""The default under stress: three image folders built from the pool where one choice is known to
be fragile, the default's choice and evidence beside every candidate trained alone on the same split.

- ``val-3-per-class``: emoji-google, 10 training images per class and a ``val/`` folder of only 3
  per class: the check scores on the user's validation images (their word for what the model
  meets), so its evidence is 24 images; noise alone must move nothing.
- ``inverted-grey``: emoji-apple made grey, inverted and contrast-crushed (values 96-160): ImageNet's
  BatchNorm statistics fit badly, the case for adapting them.
- ``photographs``: scikit-image's faces (photographs, face or not) at 10 per class: where a
  multi-cut head's early taps may be noise beside the final features.

Each case is written as an image folder (``train/``, ``test/``, and ``val/`` where named) under
``--out/data``; then ``transferlab train FOLDER --resolution 112`` (the default) and each option
alone (``--strategy head``, ``finetune``, ``finetune --no-freeze-bn``... as the table names them,
``multicut``, ``ensemble``) on the same folder. One JSON file per run in --out; a rerun resumes.

    python benchmarks/stress_cases.py --out runs/stress --cache-dir /tmp/study-cache
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from resumable import arguments, record

import transferlab as tl
from transferlab.data import ImageSet, per_class_subset
from transferlab.datasets.catalog import load_dataset

RESOLUTION = 112
TRAIN_PER_CLASS = 10
OPTIONS = {  # name -> the options of tl.train that run it alone
    "head": {"strategy": "head"},
    "finetune": {"strategy": "finetune", "freeze_bn": True},
    "finetune-adapted-bn": {"strategy": "finetune", "freeze_bn": False},
    "multicut": {"strategy": "multicut"},
    "ensemble": {"strategy": "ensemble"},
}


def crushed_inverted_grey(image: Image.Image) -> Image.Image:
    """Grey, inverted, its values squeezed into 96-160: far from ImageNet's statistics."""
    grey = np.asarray(ImageOps.invert(image.convert("L")), dtype=np.float32)
    return Image.fromarray((96 + grey * (64 / 255)).round().astype(np.uint8)).convert("RGB")


def write_split(images: ImageSet, folder: Path, change=None) -> None:
    for i in range(len(images)):
        target = folder / images.classes[images.labels[i]] / f"{i:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        image = images.open(i).convert("RGB")
        (change(image) if change else image).save(target)


def build_case(name: str, root: Path) -> Path:
    """Case ``name``'s image folder under ``root`` (written once)."""
    folder = root / name
    if (folder / ".complete").exists():
        return folder
    source = {"val-3-per-class": "emoji-google", "inverted-grey": "emoji-apple", "photographs": "faces"}[name]
    data = load_dataset(source)
    change = crushed_inverted_grey if name == "inverted-grey" else None
    train = per_class_subset(data.train, TRAIN_PER_CLASS + 3, 0)
    rng = np.random.default_rng(0)
    val_positions = np.sort(np.concatenate([rng.permutation(np.flatnonzero(train.labels == c))[:3]
                                            for c in range(len(train.classes))]))  # fmt: skip
    if name == "val-3-per-class":
        write_split(train.subset(val_positions), folder / "val", change)
        train = train.subset(np.setdiff1d(np.arange(len(train)), val_positions))
    else:
        train = per_class_subset(train, TRAIN_PER_CLASS, 0)
    write_split(train, folder / "train", change)
    write_split(data.test, folder / "test", change)
    (folder / ".complete").touch()
    return folder


def run(folder: Path, out: Path, cache_dir: str | None, options: dict) -> dict:
    started = time.perf_counter()
    result = tl.train(str(folder), resolution=RESOLUTION, seed=0, out=str(out), cache_dir=cache_dir, **options)
    crossfit = (result.plan.crossfit or {}) if result.plan and result.plan.crossfit else {}
    return {"balanced_accuracy": result.metrics["balanced_accuracy"], "seconds": time.perf_counter() - started,
            "strategy": result.metrics["strategy"], "members": list(result.plan.members) if result.plan else [],
            "candidates": {name: {"accuracy": row["accuracy"], "weight": row.get("weight")}
                           for name, row in crossfit.get("candidates", {}).items()},
            "reason": crossfit.get("reason")}  # fmt: skip


def main() -> None:
    args = arguments(__doc__, "runs/stress", ("val-3-per-class", "inverted-grey", "photographs"), (0,))
    for name in args.data:
        folder = build_case(name, args.out / "data")
        results = {}
        for option, options in {"default": {}, **OPTIONS}.items():
            path = args.out / f"{name}-{option}.json"
            if not args.report:
                record(path, functools.partial(run, folder, args.out / "runs" / name / option, args.cache_dir, options))
            if path.exists():
                results[option] = json.loads(path.read_text())
        if "default" not in results:
            continue
        default = results["default"]
        best = max(r["balanced_accuracy"] for r in results.values())
        chosen = ", ".join(f"{name} {row['weight']:.2f}" for name, row in default["candidates"].items()
                           if row.get("weight"))  # fmt: skip
        regret = 100 * (best - default["balanced_accuracy"])
        print(f"\n{name}: default chose {chosen} ({default['reason']}); regret {regret:.2f} points")
        print("| run | test balanced accuracy | out-of-fold accuracy | weight |")
        print("|---|---|---|---|")
        for option in [*results, *(c for c in default["candidates"] if c not in results and c != "combination")]:
            row, result = default["candidates"].get(option, {}), results.get(option)
            test = "-" if result is None else f"{result['balanced_accuracy']:.3f}"
            oof = f"{row['accuracy']:.3f}" if row else "-"
            weight = "-" if row.get("weight") is None else f"{row['weight']:.2f}"
            print(f"| {option} | {test} | {oof} | {weight} |")


if __name__ == "__main__":
    main()
