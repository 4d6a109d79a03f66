"""Which data sets change their labels under a mirror? The product's mirror test on every set of the pools.

For each data set and seed: --per-class training images (seeded), the frozen backbone's pooled
features at its final cut (--resolution px), as they are and mirrored left to right, and
:func:`transferlab.transferability.mirror_test` on them - the test every augmenting run makes on
its training images before it trains. Printed per set and seed: the probe's accuracy on held-out
images as they are and mirrored, the drop in standard errors, and whether the run would withhold its flips.
With --crops the same test on the augmentation's random crops (no mirror) instead of mirrors: whether
a test like it could tell where crops change the label.

    cd benchmarks && python mirror_sets.py
    cd benchmarks && python mirror_sets.py --crops --seeds 0
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from transferlab.data import per_class_subset
from transferlab.datasets import load_dataset
from transferlab.features import compute_outputs, predict_pixels
from transferlab.sources import build_backbone
from transferlab.strategies import FINAL_CUT
from transferlab.surgery import Normalize, body_at
from transferlab.trainer.loops import augment_batch
from transferlab.transferability import mirror_test

SETS = ("orientation", "digits", "glyphs", "textures", "fashion-mnist", "count", "colour-shape", "animal-mnist", "faces",
        "emoji-apple", "emoji-google", "emoji-twitter", "emoji-facebook", "emoji-fluent", "furniture", "cartoons")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--resolution", type=int, default=112)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--crops", action="store_true", help="test the augmentation's crops instead of mirrors")
    args = parser.parse_args()
    backbone = build_backbone(args.backbone)
    features = nn.Sequential(Normalize(backbone.preprocessing.mean, backbone.preprocessing.std),
                             body_at(backbone, FINAL_CUT)).eval()  # fmt: skip
    change = "cropped" if args.crops else "mirrored"
    print(f"| data | seed | images | as they are | {change} | drop, standard errors | changes labels |")
    print("|---|---|---|---|---|---|---|")
    for name in args.data:
        for seed in args.seeds:
            images = per_class_subset(load_dataset(name).train, args.per_class, seed)
            pixels = torch.from_numpy(compute_outputs(None, images, args.resolution, desc="decode").values)
            torch.manual_seed(seed)
            changed = augment_batch(pixels, flips=False) if args.crops else pixels.flip(-1)
            found = mirror_test(predict_pixels(features, pixels).numpy(), predict_pixels(features, changed).numpy(),
                                images.labels, len(images.classes), seed)  # fmt: skip
            drop = (found.accuracy - found.mirrored_accuracy) / found.standard_error
            print(f"| {name} | {seed} | {len(images)} | {found.accuracy:.3f} | {found.mirrored_accuracy:.3f} | {drop:+.1f} "
                  f"| {'yes' if found.changes_labels else 'no'} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
