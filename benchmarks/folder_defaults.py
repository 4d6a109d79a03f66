"""A default of the command line against the setting it replaced, on folders as a user brings them.

For each colour set of the pool and seed, a folder is written: ``train/`` with --per-class images
of every class (the whole class where it has fewer), ``test/`` with --test-per-class; the run draws
its validation split from ``train/`` as any run does (10% of each class, at least one). Then each
option of --options trains on it at 112 px with its defaults and with the flags of --against, and
the test balanced accuracy is printed side by side, with the mean difference over the folders and
an exact sign-flip test over the data sets (each set's seeds averaged first). One JSON file per
run in --out; a rerun resumes. --against:

* ``holdout``: ``--holdout``, multicut's head fitted without its validation images (as before
  2026-12-05; by default it fits them too, choosing its penalty and temperature leave-one-out);
* ``patience-3``: ``--patience 3``, early stopping on the validation loss however few its images
  (as before 2026-12-05; by default none where the smallest validation class has fewer than 10).

    python benchmarks/folder_defaults.py --out runs/holdout --cache-dir /tmp/study-cache --per-class 12 40 --seeds 0 1 2 --options multicut --against holdout
    python benchmarks/folder_defaults.py --out runs/patience --cache-dir /tmp/study-cache --per-class 12 --seeds 0 1 2 --options finetune --against patience-3
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from imbalanced import long_tailed_folder
from resumable import arguments, record

import transferlab as tl
from transferlab.advisor.study import paired_test_by_set

SETS = ("emoji-apple", "emoji-google", "emoji-twitter", "emoji-facebook", "emoji-fluent", "furniture", "cartoons")
OPTIONS = ("multicut", "auto")
AGAINST = {"holdout": {"holdout": True}, "patience-3": {"patience": 3}}  # the settings each default replaced


def one_run(folder: Path, option: str, flags: dict, seed: int, out: Path, cache_dir: str | None) -> dict:
    result = tl.train(str(folder), strategy=option, resolution=112, seed=seed, out=str(out), cache_dir=cache_dir,
                      **flags)  # fmt: skip
    chosen = result.plan.strategy if result.plan else option
    return {"balanced_accuracy": result.metrics["balanced_accuracy"], "accuracy": result.metrics["test_accuracy"],
            "val_accuracy": result.metrics.get("val_accuracy"), "strategy": chosen,
            "train_seconds": result.metrics.get("train_seconds")}  # fmt: skip


def _shape(parser) -> None:
    parser.add_argument("--per-class", nargs="+", type=int, default=[12], help="training images a class (train/)")
    parser.add_argument("--test-per-class", type=int, default=30)
    parser.add_argument("--options", nargs="*", default=list(OPTIONS), help="none: only write the folders")
    parser.add_argument("--against", choices=tuple(AGAINST), default="holdout")


def main() -> None:
    args = arguments(__doc__, "runs/holdout", SETS, (0,), extend=_shape)
    variants = {"default": {}, args.against: AGAINST[args.against]}
    rows: dict[tuple, dict] = {}
    for size in args.per_class:
        for option in [None, *args.options]:  # first the folders, then each option on every one
            for name in args.data:
                for seed in args.seeds:
                    folder = long_tailed_folder(name, args.out / "data" / f"{name}-{size}-seed{seed}", size, size,
                                                args.test_per_class, seed)  # fmt: skip
                    for variant, flags in variants.items() if option else ():
                        path = args.out / f"{name}-{size}-seed{seed}-{option}-{variant}.json"
                        if not args.report:
                            record(path, functools.partial(one_run, folder, option, flags, seed,
                                                           args.out / "runs" / path.stem, args.cache_dir))  # fmt: skip
                        if path.exists():
                            rows[(name, size, seed, option, variant)] = json.loads(path.read_text())
    print(f"train/: {', '.join(map(str, args.per_class))} images a class; test/: {args.test_per_class} a class\n")
    print(f"| set | per class | seed | option | balanced accuracy: default | {args.against} | difference | "
          f"what trained: default | {args.against} |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for (name, size, seed, option, variant), found in sorted(rows.items()):
        other = rows.get((name, size, seed, option, args.against))
        if variant == "default" and other:
            difference = 100 * (found["balanced_accuracy"] - other["balanced_accuracy"])
            print(f"| {name} | {size} | {seed} | {option} | {found['balanced_accuracy']:.3f} | "
                  f"{other['balanced_accuracy']:.3f} | {difference:+.2f} | {found['strategy']} | {other['strategy']} |")
    for size in args.per_class:
        for option in args.options:
            scored = {f"{name}@{seed}": {v: -100 * rows[(name, size, seed, option, v)]["balanced_accuracy"] for v in variants}
                      for name in args.data for seed in args.seeds
                      if all((name, size, seed, option, v) in rows for v in variants)}  # fmt: skip
            if scored:  # "regret" here: minus the balanced accuracy, so the test's difference is the default minus the other
                test = paired_test_by_set(scored, "default", args.against)
                print(f"{option}, {size} a class: default minus {args.against} {test['mean_difference']:+.2f} points of balanced "
                      f"accuracy, {len(scored)} folders (by data set: p = {test['p_value']:.2g} over {test['sets']})")


if __name__ == "__main__":
    main()
