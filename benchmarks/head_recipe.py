"""The frozen head on one cut: computed (ridge at the strength of least leave-one-out squared error,
what ``head`` and ``truncate`` run since 2026-12-06) against trained (AdamW, 40 epochs at lr 1e-3
raised to 500 steps: the recipe before, ``trained_head.py``), on the same features.

For each data set, size and seed a folder as users bring them is written (``train/`` N images a
class, the run drawing its own 10% validation split; ``test/`` 30 a class: ``imbalanced.py``'s
folders). At each cut of --cuts (``final``: ``head``; an earlier one: ``truncate``) the strategy
runs its head stage as ``transferlab train FOLDER --strategy head|truncate --resolution 112``
would (the computed head, fitted on the validation images too), then on the very features it read
(the feature cache) a head is trained by ``trained_head.fit_head`` with the recipe before. Test balanced
accuracy of both, the paired difference, and an exact sign-flip test over the data sets (each set's
folders averaged first). One JSON file per folder and cut in --out; a rerun resumes. Nothing is
chosen on a test split.

    cd benchmarks && python head_recipe.py --out ../runs/head-recipe --cache-dir /tmp/study-cache --sizes 12 --seeds 0 1
    cd benchmarks && python head_recipe.py --out ../runs/head-recipe --cache-dir /tmp/study-cache --sizes 60 --seeds 0 \
        --data emoji-apple emoji-google emoji-twitter emoji-facebook emoji-fluent furniture cartoons
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
from imbalanced import long_tailed_folder
from resumable import arguments, record

COLOUR = ("emoji-apple", "emoji-google", "emoji-twitter", "emoji-facebook", "emoji-fluent", "furniture", "cartoons")
GREY = ("textures", "digits", "fashion-mnist", "orientation", "colour-shape", "count", "glyphs")
TEST_PER_CLASS = 30


def both_heads(folder: Path, cut: str, seed: int, out: Path, cache_dir: str | None) -> dict:
    """Test balanced accuracy of the computed head (the strategy's own stage) and of the AdamW head
    trained on the same features, at ``cut``."""
    import torch
    from trained_head import fit_head, trained_head_settings

    import transferlab as tl
    from transferlab.heads import make_head
    from transferlab.metrics import classification_metrics
    from transferlab.prepare import prepare
    from transferlab.trainer.context import RunContext
    from transferlab.trainer.stages import STAGES
    from transferlab.trainer.train import build_model

    strategy = "head" if cut == "final" else "truncate"
    config = tl.TrainConfig(data=str(folder), strategy=strategy, cut=None if cut == "final" else cut, resolution=112,
                            seed=seed, out=str(out), cache_dir=cache_dir)  # fmt: skip
    prepared = prepare(config)
    torch.manual_seed(config.seed)
    model, cut = build_model(prepared, config)
    stage = STAGES["head"](model, prepared, cut, config, RunContext(Path(config.out)))
    rows = {s: stage.inputs[s].readable(getattr(prepared.splits, s).labels) for s in ("train", "val", "test")}
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = rows.values()
    names = list(prepared.classes)
    torch.manual_seed(config.seed)  # the head's initial weights as build_model draws them
    trained = make_head(model.head.fc.in_features, len(names), config.head_init, config.dropout)
    fit_head(trained, train_x, train_y, val_x, val_y, trained_head_settings(config))
    with torch.no_grad():
        trained_logits = trained(torch.from_numpy(np.asarray(test_x, dtype=np.float32))).numpy()
    computed_logits = stage.logits["test"].numpy()
    return {name: classification_metrics(test_y, logits.argmax(1), names)["balanced_accuracy"]
            for name, logits in (("computed", computed_logits), ("trained", trained_logits))}  # fmt: skip


def main() -> None:
    from transferlab.advisor.study import paired_test_by_set

    def extend(parser):
        parser.add_argument("--cuts", nargs="+", default=["final", "blocks.2"])

    args = arguments(__doc__, "runs/head-recipe", COLOUR + GREY, (0, 1), sizes=(12,), extend=extend)
    results = {}
    for size in args.sizes:
        for name in args.data:
            for seed in args.seeds:
                folder = long_tailed_folder(name, args.out / "data" / f"{name}-{size}-seed{seed}", size, size,
                                            TEST_PER_CLASS, seed)  # fmt: skip
                for cut in args.cuts:
                    path = args.out / f"{name}-{size}-seed{seed}-{cut}.json"
                    if not args.report:
                        record(path, functools.partial(both_heads, folder, cut, seed,
                                                       args.out / "runs" / f"{name}-{size}-{seed}-{cut}", args.cache_dir))  # fmt: skip
                    if path.exists():
                        results[(size, name, seed, cut)] = json.loads(path.read_text())
    print("| size | cut | folders | computed (mean) | trained (mean) | computed - trained, points | worst | sets better / worse | p (by set) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for cut in args.cuts:
            cells = {f"{name}@{seed}": r for (s, name, seed, c), r in results.items() if s == size and c == cut}
            if not cells:
                continue
            differences = np.array([100 * (r["computed"] - r["trained"]) for r in cells.values()])
            by_set: dict[str, list[float]] = {}
            for cell, difference in zip(cells, differences):
                by_set.setdefault(cell.rsplit("@", 1)[0], []).append(difference)
            set_means = [np.mean(v) for v in by_set.values()]
            test = paired_test_by_set(cells, "computed", "trained")
            print(f"| {size} | {cut} | {len(cells)} | {np.mean([r['computed'] for r in cells.values()]):.4f} | "
                  f"{np.mean([r['trained'] for r in cells.values()]):.4f} | {differences.mean():+.2f} | "
                  f"{differences.min():+.2f} | {sum(m > 0 for m in set_means)} / {sum(m < 0 for m in set_means)} | "
                  f"{test['p_value']:.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
