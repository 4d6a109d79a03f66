"""The closed-form multicut head fitted on the validation images too, against ``--holdout``.

``multicut``'s head chooses nothing on its validation split (its penalty and temperature come from
the exact leave-one-out scores), so by default it fits those images too; ``--holdout`` keeps them
out, as before 2026-12-05. For each colour set of the pool and seed, a folder as a user brings it
is written: ``train/`` with --per-class images of every class (the whole class where it has
fewer), ``test/`` with --test-per-class; the run draws its validation split from ``train/`` as any
run does (10% of each class, at least one). Then each option of --options trains on it at 112 px
both ways, and the test balanced accuracy is printed side by side, with the mean difference over
the folders and an exact sign-flip test over the data sets (each set's seeds averaged first). One
JSON file per run in --out; a rerun resumes.

    python benchmarks/holdout.py --out runs/holdout --cache-dir /tmp/study-cache --per-class 12 40 --seeds 0 1 2
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
VARIANTS = {"fit": False, "holdout": True}  # the value of --holdout


def one_run(folder: Path, option: str, holdout: bool, seed: int, out: Path, cache_dir: str | None) -> dict:
    result = tl.train(str(folder), strategy=option, holdout=holdout, resolution=112, seed=seed, out=str(out),
                      cache_dir=cache_dir)  # fmt: skip
    chosen = result.plan.strategy if result.plan else option
    return {"balanced_accuracy": result.metrics["balanced_accuracy"], "accuracy": result.metrics["test_accuracy"],
            "val_accuracy": result.metrics.get("val_accuracy"), "strategy": chosen,
            "train_seconds": result.metrics.get("train_seconds")}  # fmt: skip


def _shape(parser) -> None:
    parser.add_argument("--per-class", nargs="+", type=int, default=[12], help="training images a class (train/)")
    parser.add_argument("--test-per-class", type=int, default=30)
    parser.add_argument("--options", nargs="+", default=list(OPTIONS))


def main() -> None:
    args = arguments(__doc__, "runs/holdout", SETS, (0,), extend=_shape)
    rows: dict[tuple, dict] = {}
    for size in args.per_class:
        for option in args.options:
            for name in args.data:
                for seed in args.seeds:
                    folder = long_tailed_folder(name, args.out / "data" / f"{name}-{size}-seed{seed}", size, size,
                                                args.test_per_class, seed)  # fmt: skip
                    for variant, holdout in VARIANTS.items():
                        path = args.out / f"{name}-{size}-seed{seed}-{option}-{variant}.json"
                        if not args.report:
                            record(path, functools.partial(one_run, folder, option, holdout, seed,
                                                           args.out / "runs" / path.stem, args.cache_dir))  # fmt: skip
                        if path.exists():
                            rows[(name, size, seed, option, variant)] = json.loads(path.read_text())
    print(f"train/: {', '.join(map(str, args.per_class))} images a class; test/: {args.test_per_class} a class\n")
    print("| set | per class | seed | option | balanced accuracy: fit | holdout | difference | auto's choice: fit | holdout |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, size, seed, option, variant), found in sorted(rows.items()):
        other = rows.get((name, size, seed, option, "holdout"))
        if variant == "fit" and other:
            difference = 100 * (found["balanced_accuracy"] - other["balanced_accuracy"])
            print(f"| {name} | {size} | {seed} | {option} | {found['balanced_accuracy']:.3f} | "
                  f"{other['balanced_accuracy']:.3f} | {difference:+.2f} | {found['strategy']} | {other['strategy']} |")
    for size in args.per_class:
        for option in args.options:
            scored = {f"{name}@{seed}": {v: -100 * rows[(name, size, seed, option, v)]["balanced_accuracy"] for v in VARIANTS}
                      for name in args.data for seed in args.seeds
                      if all((name, size, seed, option, v) in rows for v in VARIANTS)}  # fmt: skip
            if scored:  # "regret" here: minus the balanced accuracy, so the test's difference is fit minus holdout
                test = paired_test_by_set(scored, "fit", "holdout")
                print(f"{option}, {size} a class: fit minus holdout {test['mean_difference']:+.2f} points of balanced "
                      f"accuracy, {len(scored)} folders (by data set: p = {test['p_value']:.2g} over {test['sets']})")


if __name__ == "__main__":
    main()
