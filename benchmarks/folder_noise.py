"""How much of the regret on folders as users bring them is their test split's own noise.

``benchmarks/imbalanced.py`` trains every option on folders with a ``test/`` split and prints each
option's regret against the folder's best. As in ``benchmarks/regret_noise.py`` (the study's cells),
every option's saved model predicts the folder's test images again (PyTorch engine; cached in
--out, and checked against the balanced accuracy the run recorded), and the test split is
resampled class by class, 1,000 times: the regret of the option best on the whole split on the
resamples is the floor a rule that always knew the best option would show.

    cd benchmarks && python folder_noise.py --runs ../runs/user-12b --out ../runs/folder-noise-12 --seeds 0 1 2 \\
        --data emoji-apple emoji-google emoji-twitter emoji-facebook emoji-fluent furniture cartoons
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from imbalanced import OPTIONS
from regret_noise import balanced, full_regrets, print_noise, resampled_regrets
from resumable import arguments

import transferlab as tl
from transferlab.datasets import load_dataset

CHECK_TOLERANCE = 1e-6  # the recomputed balanced accuracy against the run's own


def test_images(folder: Path) -> tuple[list[Path], np.ndarray]:
    """The paths of ``folder``'s test split and their class names, read as ``evaluate`` reads them."""
    test = load_dataset(str(folder)).test
    return [test.source.paths[i] for i in test.indices], np.array([test.classes[label] for label in test.labels])


def folder_predictions(runs: Path, name: str, seed: int, options: list[str], weight: str, out: Path) -> dict:
    """Every option's predicted class names on the folder's test images and their labels, cached as
    ``out/<name>-seed<seed>.npz``; each option's balanced accuracy is checked against its record."""
    saved = out / f"{name}-seed{seed}.npz"
    if not saved.exists():
        paths, labels = test_images(runs / "data" / f"{name}-seed{seed}")
        predictions = {}
        for option in options:
            model = tl.load(runs / "runs" / f"{name}-seed{seed}-{option}-{weight}" / "model", engine="pytorch")
            predictions[option] = np.array([found.top[0][0] for found in model.predict(paths, top_k=1)])
            recorded = json.loads((runs / f"{name}-seed{seed}-{option}-{weight}.json").read_text())["balanced_accuracy"]
            recomputed = balanced((predictions[option] == labels)[None].astype(float), labels, np.ones(len(labels), bool))[0]
            if abs(recomputed - recorded) > CHECK_TOLERANCE:
                raise RuntimeError(f"{name}@{seed} {option}: recomputed {recomputed:.4f}, recorded {recorded:.4f}")
        np.savez(saved, labels=labels, **predictions)
    found = dict(np.load(saved))
    return {"labels": found.pop("labels"), "predictions": {option: found[option] for option in options}}


def main() -> None:
    args = arguments(__doc__, "runs/folder-noise", ("emoji-apple",), (0,),
                     extend=lambda parser: parser.add_argument("--runs", default="runs/user-12b"))  # fmt: skip
    rules = {option if option == "auto" else f"always {option}": option for option in OPTIONS}
    rng = np.random.default_rng(0)
    rows = []
    for name in args.data:
        for seed in args.seeds:
            found = folder_predictions(Path(args.runs), name, seed, list(OPTIONS), "table", args.out)
            rows.append((f"{name}@{seed}", len(found["labels"]), full_regrets(found, rules),
                         resampled_regrets(found, rng, rules)))  # fmt: skip
    print_noise(rows, rules)


if __name__ == "__main__":
    main()
