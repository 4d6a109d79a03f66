"""Crop or squash on non-square images: the default's choice beside the other fit, on constructed folders.

Every image set of the pool is square, so these folders are built from it: what a user's
non-square images look like where the choice matters either way.

- ``defects-4x3``, ``defects-2x1``: inspection-like images (scikit-image's grass, gravel and brick
  photographs, 4:3 and 2:1), half of them with a small dark spot anywhere in the frame: a centre
  crop cuts off the spots near the sides (a quarter of a 4:3 frame, half of a 2:1 one).
- ``objects-offcentre-16x9``, ``objects-offcentre-4x3``: the furniture set's five classes pasted at
  a random place on those textures (60-90% of the frame's height; training images from the set's
  training objects, test images from its test objects): a crop may cut into an object, a squash
  stretches it.
- ``objects-centred-4x3``: the same objects in the middle of the frame: the crop loses only
  ground and gives the object more pixels.

Each folder has ``train/`` (20 images a class) and ``test/`` (40 a class), drawn anew for each seed.
The default (``transferlab train FOLDER --resolution 112``: crop or squash decided on the images;
``--resolution`` sets another) runs, then the same command with the other fit (``--fit crop`` or
``--fit squash``); one JSON file per run in --out, a rerun resumes. Needs the furniture set (``make pool-data``).

    python benchmarks/fit.py --out runs/fit --cache-dir /tmp/study-cache --seeds 0 1
    python benchmarks/fit.py --out runs/fit-224 --cache-dir /tmp/study-cache --resolution 224 --data defects-4x3 defects-2x1
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image
from resumable import arguments, record

import transferlab as tl
from transferlab.datasets.catalog import load_dataset
from transferlab.datasets.skimage_files import TEXTURES, skimage_data_dir

RESOLUTION = 112
TRAIN_PER_CLASS, TEST_PER_CLASS = 20, 40
CASES = {  # name -> (width, height, what the classes are)
    "defects-4x3": (400, 300, "defects"),
    "defects-2x1": (480, 240, "defects"),
    "objects-offcentre-16x9": (448, 252, "offcentre"),
    "objects-offcentre-4x3": (400, 300, "offcentre"),
    "objects-centred-4x3": (400, 300, "centred"),
}


def _textures() -> list[Image.Image]:
    return [Image.open(skimage_data_dir() / f"{name}.png").convert("RGB") for name in TEXTURES]


def _ground(textures: list[Image.Image], size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    texture = textures[rng.integers(len(textures))]
    x, y = rng.integers(0, texture.width - 200), rng.integers(0, texture.height - 200)
    return texture.crop((x, y, x + 200, y + 200)).resize(size, Image.Resampling.BICUBIC)


def _defect(ground: Image.Image, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(ground).copy()
    height, width = pixels.shape[:2]
    radius = max(3, round(0.06 * height))
    cy, cx = rng.integers(radius, height - radius), rng.integers(radius, width - radius)
    rows, columns = np.ogrid[:height, :width]
    spot = (rows - cy) ** 2 + (columns - cx) ** 2 < radius**2
    pixels[spot] = (pixels[spot] * 0.3).astype(np.uint8)
    return Image.fromarray(pixels)


def _pasted(ground: Image.Image, item: Image.Image, centred: bool, rng: np.random.Generator) -> Image.Image:
    canvas = ground.convert("RGBA")
    side = round(canvas.height * rng.uniform(0.6, 0.9))
    x = (canvas.width - side) // 2 if centred else int(rng.integers(0, canvas.width - side + 1))
    y = int(rng.integers(0, canvas.height - side + 1))
    canvas.alpha_composite(item.resize((side, side), Image.Resampling.BICUBIC), (x, y))
    return canvas.convert("RGB")


def build_case(name: str, root: Path, seed: int) -> Path:
    """Case ``name``'s folder for ``seed`` under ``root`` (written once)."""
    folder = root / f"{name}-seed{seed}"
    if (folder / ".complete").exists():
        return folder
    width, height, kind = CASES[name]
    rng, textures = np.random.default_rng(seed), _textures()
    furniture = None if kind == "defects" else load_dataset("furniture")
    for split, count in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        items = None if furniture is None else getattr(furniture, split)
        for label, class_name in enumerate(("good", "defect") if items is None else items.classes):
            target = folder / split / class_name
            target.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                ground = _ground(textures, (width, height), rng)
                if items is None:
                    image = _defect(ground, rng) if label == 1 else ground
                else:
                    item = items.open(int(rng.choice(np.flatnonzero(items.labels == label)))).convert("RGBA")
                    image = _pasted(ground, item, kind == "centred", rng)
                image.save(target / f"{i:03d}.png")
    (folder / ".complete").touch()
    return folder


def run(folder: Path, out: Path, cache_dir: str | None, seed: int, resolution: int, options: dict) -> dict:
    started = time.perf_counter()
    result = tl.train(str(folder), resolution=resolution, seed=seed, out=str(out), cache_dir=cache_dir, **options)
    plan = result.plan
    return {"balanced_accuracy": result.metrics["balanced_accuracy"], "seconds": time.perf_counter() - started,
            "fit": tl.load(out / "model").fit, "fit_check": plan.fit_check if plan else {}, "strategy": result.metrics["strategy"],
            "members": [m["candidate"] for m in plan.members] if plan else []}  # fmt: skip


def main() -> None:
    args = arguments(__doc__, "runs/fit", tuple(CASES), (0, 1),
                     extend=lambda parser: parser.add_argument("--resolution", type=int, default=RESOLUTION))
    rows = []
    for name in args.data:
        for seed in args.seeds:
            folder = build_case(name, args.out / "data", seed)
            default_path = args.out / f"{name}-seed{seed}-default.json"
            if not args.report:
                record(default_path, functools.partial(run, folder, args.out / "runs" / f"{name}-{seed}" / "default",
                                                       args.cache_dir, seed, args.resolution, {}))  # fmt: skip
            if not default_path.exists():
                continue
            default = json.loads(default_path.read_text())
            other = "crop" if default["fit_check"]["fit"] == "squash" else "squash"
            other_path = args.out / f"{name}-seed{seed}-{other}.json"
            if not args.report:
                record(other_path, functools.partial(run, folder, args.out / "runs" / f"{name}-{seed}" / other,
                                                     args.cache_dir, seed, args.resolution, {"fit": other}))  # fmt: skip
            if other_path.exists():
                rows.append((name, seed, default, json.loads(other_path.read_text())))
    print("\n| folder | seed | crop / squash probed (the sample) | the default's fit | default | the other fit | difference, points |")
    print("|---|---|---|---|---|---|---|")
    for name, seed, default, other in rows:
        check = default["fit_check"]
        print(f"| {name} | {seed} | {check['crop']:.3f} / {check['squash']:.3f} | {check['fit']} | "
              f"{default['balanced_accuracy']:.3f} | {other['balanced_accuracy']:.3f} | "
              f"{100 * (default['balanced_accuracy'] - other['balanced_accuracy']):+.2f} |")  # fmt: skip
    if rows:
        gains = [100 * (d["balanced_accuracy"] - o["balanced_accuracy"]) for _, _, d, o in rows]
        crop_rows = [(d, o) for _, _, d, o in rows]
        always_crop = np.mean([d["balanced_accuracy"] if d["fit_check"]["fit"] == "crop" else o["balanced_accuracy"] for d, o in crop_rows])
        always_squash = np.mean([d["balanced_accuracy"] if d["fit_check"]["fit"] == "squash" else o["balanced_accuracy"]
                                 for d, o in crop_rows])  # fmt: skip
        print(f"\n{len(rows)} folders: the default's fit against the other {np.mean(gains):+.2f} points on average "
              f"({min(gains):+.2f} to {max(gains):+.2f}); mean test balanced accuracy: default "
              f"{np.mean([d['balanced_accuracy'] for d, _ in crop_rows]):.4f}, always crop {always_crop:.4f}, "
              f"always squash {always_squash:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
