"""Imbalanced folders: each option with ``--class-weight none`` and ``balanced``, on balanced accuracy.

Real folders are rarely balanced (an inspection line's good parts outnumber its defects), and
balanced accuracy is what the study and the README judge by. For each colour set of the pool and
seed, a long-tailed folder is written: ``train/`` holds, per class in a seeded order, from --most
down to --least images (geometrically), ``test/`` --test-per-class images of every class (a
balanced test split: its balanced accuracy is the mean per-class recall either way). Then each
option of --options trains on it at 112 px with each class weight, and the test balanced accuracy
and plain accuracy are printed side by side, with the mean difference over the folders and an exact
sign-flip test over the data sets (each set's seeds averaged first). One JSON file per run in
--out; a rerun resumes. With --most equal to --least the folders are balanced, as users bring
them (the run draws its own 10% validation split); with --weights table each option runs with its
defaults, and the printed regrets (points below each folder's best option) judge the default.
--before DIR adds the runs of the same command before a change (``auto before``, ``ensemble
before``) to the report, so the default is judged against itself on the same folders.

    python benchmarks/imbalanced.py --out runs/imbalanced --cache-dir /tmp/study-cache --seeds 0 1
    cd benchmarks && python imbalanced.py --out ../runs/user-12b --cache-dir /tmp/study-cache --most 12 --least 12 \
        --weights table --seeds 0 1 2 --data emoji-apple emoji-google emoji-twitter emoji-facebook emoji-fluent \
        furniture cartoons --options multicut head ensemble auto finetune
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
from resumable import arguments, record

import transferlab as tl
from transferlab.advisor.study import paired_test_by_set
from transferlab.data import per_class_subset
from transferlab.datasets import load_dataset

SETS = ("emoji-apple", "emoji-google", "furniture", "cartoons")
OPTIONS = ("auto", "ensemble", "multicut", "head", "finetune")
WEIGHTS = ("none", "balanced", "table")  # table: no --class-weight, each strategy's own default (strategies.py)


def class_counts(classes: int, most: int, least: int, seed: int) -> np.ndarray:
    """Per class, from ``most`` down to ``least`` images geometrically, the classes in a seeded order."""
    counts = np.round(most * (least / most) ** (np.arange(classes) / max(classes - 1, 1))).astype(int)
    return counts[np.random.default_rng(seed).permutation(classes)]


def _write(images, positions, root: Path) -> None:
    for position in positions:  # a '/' in a class name ('T-shirt/top') would nest a folder
        folder = root / images.classes[images.labels[position]].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        images.open(int(position)).convert("RGB").save(folder / f"{position}.png")


def long_tailed_folder(name: str, root: Path, most: int, least: int, test_per_class: int, seed: int) -> Path:
    """``name``'s training images cut to :func:`class_counts` (each class's images drawn seeded, the
    whole class where it has fewer) as ``root/train``, and a balanced test split as ``root/test``."""
    if (root / "test").exists():
        return root
    dataset = load_dataset(name)
    rng = np.random.default_rng(seed)
    counts = class_counts(len(dataset.train.classes), most, least, seed)
    kept = [rng.permutation(np.flatnonzero(dataset.train.labels == c))[:count] for c, count in enumerate(counts)]
    _write(dataset.train, np.concatenate(kept), root / "train")
    test = per_class_subset(dataset.test, test_per_class, seed)
    staging = root / "test.partial"
    _write(test, np.arange(len(test)), staging)
    staging.rename(root / "test")
    return root


def one_run(folder: Path, option: str, weight: str, seed: int, out: Path, cache_dir: str | None) -> dict:
    """``option``: a strategy, ``strategy@cut`` (``finetune@all``: LP-FT through every cut), each
    optionally with ``+flag`` switches (``finetune+augment``: ``--augment`` set)."""
    option, *switches = option.split("+")
    strategy, _, cut = option.partition("@")
    result = tl.train(str(folder), strategy=strategy, cut=cut or None, class_weight=None if weight == "table" else weight,
                      resolution=112, seed=seed, out=str(out), cache_dir=cache_dir,
                      **dict.fromkeys(switches, True))  # fmt: skip
    return {"balanced_accuracy": result.metrics["balanced_accuracy"], "accuracy": result.metrics["test_accuracy"],
            "strategy": result.plan.strategy if result.plan else strategy,
            "train_seconds": result.metrics.get("train_seconds")}  # fmt: skip


def _shape(parser) -> None:
    parser.add_argument("--most", type=int, default=40, help="training images of the largest class")
    parser.add_argument("--least", type=int, default=4, help="training images of the smallest class")
    parser.add_argument("--test-per-class", type=int, default=30)
    parser.add_argument("--options", nargs="+", default=list(OPTIONS))
    parser.add_argument("--weights", nargs="+", default=["none", "balanced"], choices=WEIGHTS,
                        help="table: the strategy table's own default (the run without --class-weight)")
    parser.add_argument("--before", type=Path, help="the --out of the same command before a change: its runs of "
                        "--before-options join the report as '<option> before' (read, never trained)")
    parser.add_argument("--before-options", nargs="+", default=["auto", "ensemble"])


def runs_before(folder: Path, data: list[str], seeds: list[int], options: list[str], weights: list[str]) -> dict:
    """The runs of ``options`` that ``folder`` holds (the same folders before a change), keyed as the
    report's rows with the option named '<option> before'."""
    return {(name, seed, f"{option} before", weight): json.loads(path.read_text())
            for name in data for seed in seeds for option in options for weight in weights
            if (path := folder / f"{name}-seed{seed}-{option}-{weight}.json").exists()}  # fmt: skip


def main() -> None:
    args = arguments(__doc__, "runs/imbalanced", SETS, (0,), extend=_shape)
    rows: dict[tuple, dict] = {}
    for name in args.data:
        for seed in args.seeds:
            folder = long_tailed_folder(name, args.out / "data" / f"{name}-seed{seed}", args.most, args.least,
                                        args.test_per_class, seed)  # fmt: skip
            for option in args.options:
                for weight in args.weights:
                    path = args.out / f"{name}-seed{seed}-{option}-{weight}.json"
                    if not args.report:
                        record(path, functools.partial(one_run, folder, option, weight, seed,
                                                       args.out / "runs" / path.stem, args.cache_dir))  # fmt: skip
                    if path.exists():
                        rows[(name, seed, option, weight)] = json.loads(path.read_text())
    if args.before:
        rows.update(runs_before(args.before, args.data, args.seeds, args.before_options, args.weights))
        args.options = [*args.options, *(f"{option} before" for option in args.before_options)]
    print(f"train/: {args.most} down to {args.least} images a class; test/: {args.test_per_class} a class\n")
    others = [weight for weight in args.weights if weight != "none"]
    print("| set | seed | option | balanced accuracy: " + " | ".join(args.weights) + " | accuracy: " + " | ".join(args.weights) + " |")
    print("|---|---|---|" + "---|" * 2 * len(args.weights))
    for name in args.data:
        for seed in args.seeds:
            for option in args.options:
                found = [rows.get((name, seed, option, weight)) for weight in args.weights]
                if all(found):
                    print(f"| {name} | {seed} | {option} | " + " | ".join(f"{r['balanced_accuracy']:.3f}" for r in found)
                          + " | " + " | ".join(f"{r['accuracy']:.3f}" for r in found) + " |")
    for weight in args.weights:
        print_regrets(rows, args.data, args.seeds, args.options, weight)
    for option in args.options:
        for weight in others:
            pair = ("none", weight)
            scored = {f"{name}@{seed}": {w: -100 * rows[(name, seed, option, w)]["balanced_accuracy"] for w in pair}
                      for name in args.data for seed in args.seeds
                      if all((name, seed, option, w) in rows for w in pair)}  # fmt: skip
            if scored:  # "regret" here: minus the balanced accuracy, so the test's difference is weight minus none
                test = paired_test_by_set(scored, weight, "none")
                print(f"{option}: {weight} minus none {test['mean_difference']:+.2f} points of balanced accuracy, "
                      f"{len(scored)} folders (by data set: p = {test['p_value']:.2g} over {test['sets']})")


def print_regrets(rows: dict[tuple, dict], data: list[str], seeds: list[int], options: list[str], weight: str) -> None:
    """Each option's regret under ``weight``: points of test balanced accuracy below the best option
    of the folder, mean and worst over the folders every option finished; the default against
    each option always by the exact sign-flip test over the data sets; then the same on each set's
    accuracies averaged over its seeds."""
    scored = {f"{name}@{seed}": {o: 100 * rows[(name, seed, o, weight)]["balanced_accuracy"] for o in options}
              for name in data for seed in seeds if all((name, seed, o, weight) in rows for o in options)}  # fmt: skip
    if len(options) < 2 or not scored:
        return
    print(f"\nregret under --class-weight {weight}, {len(scored)} folders (points below the folder's best option):")
    _print_regrets(scored, options)
    by_set = {name: {o: np.mean([found[o] for cell, found in scored.items() if cell.rsplit("@", 1)[0] == name])
                     for o in options} for name in {cell.rsplit("@", 1)[0] for cell in scored}}  # fmt: skip
    if len(by_set) < len(scored):
        print(f"the same with each option's accuracy averaged over a set's seeds first (less of the test split's "
              f"noise), {len(by_set)} sets:")
        _print_regrets({f"{name}@mean": found for name, found in by_set.items()}, options)


def _print_regrets(scored: dict[str, dict[str, float]], options: list[str]) -> None:
    regrets = {cell: {o: max(found.values()) - found[o] for o in options} for cell, found in scored.items()}
    for option in options:
        values = [r[option] for r in regrets.values()]
        print(f"  {option}: mean {np.mean(values):.2f}, worst {max(values):.2f}")
    for other in [o for o in options if o != "auto"] if "auto" in options else []:
        test = paired_test_by_set(regrets, "auto", other)
        label = other if other.endswith(" before") else f"always-{other}"
        print(f"  auto against {label}: {test['mean_difference']:+.2f} points less regret "
              f"(by data set: p = {test['p_value']:.2g} over {test['sets']})")


if __name__ == "__main__":
    main()
