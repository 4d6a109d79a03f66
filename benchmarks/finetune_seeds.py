"""A second fine-tuned network in the ensemble: does averaging two training seeds pay?

On folders as users bring them, single fine-tuning runs swing a folder's test score by 2-4 points
from one training seed to the next, and the default's and always-``ensemble``'s pair carries one
such run. For every folder an ``imbalanced.py`` run left (``--runs``: its ``data/`` and its
``finetune`` runs; ``--multicut``: a run of the same folders holding ``multicut``), ``finetune`` trains
again with another training seed on the same labelled images (``--seed`` + 100: where the network
trains on its validation images too, the images are the same, only the initialization, order and
augmentation change), and the saved models' test probabilities are combined: each network alone,
the two averaged, ``multicut`` with one network (the pair, equal weights) and with both (``multicut``
one half, each network a quarter). Mean test balanced accuracy, and the change against the pair
with an exact sign-flip test over the data sets. One JSON file per folder in --out; a rerun resumes.

    cd benchmarks && python finetune_seeds.py --runs ../runs/user-12w --multicut ../runs/user-12d \\
        --out ../runs/finetune-seeds-12 --cache-dir /tmp/study-cache --seeds 0 1 \\
        --data emoji-apple emoji-google emoji-twitter emoji-facebook emoji-fluent furniture cartoons
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from resumable import arguments, record

import transferlab as tl
from transferlab.advisor.combine import log_softmax
from transferlab.advisor.study import paired_test_by_set
from transferlab.datasets import load_dataset
from transferlab.features import compute_outputs
from transferlab.metrics import classification_metrics

SEED_SHIFT = 100
COMBINATIONS = {  # name: weights of (multicut, finetune, finetune with another seed)
    "finetune": (0, 1, 0),
    "finetune, other seed": (0, 0, 1),
    "finetune, both seeds": (0, 0.5, 0.5),
    "multicut + finetune (the pair)": (0.5, 0.5, 0),
    "multicut + both seeds": (0.5, 0.25, 0.25),
    "all three equal": (1 / 3, 1 / 3, 1 / 3),
}
REFERENCE = "multicut + finetune (the pair)"


def test_probabilities(model_dir: Path, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """A saved model's softmax probabilities on the folder's test split, and the labels."""
    model = tl.load(model_dir, engine="pytorch")
    images = load_dataset(str(folder)).test.with_fit(model.fit)
    logits = compute_outputs(model.network, images, model.resolution, desc="test").values
    to_model = np.asarray([model.classes.index(c) for c in images.classes])
    return np.exp(log_softmax(logits)), to_model[images.labels]


def one_folder(folder: Path, finetune_run: Path, multicut_run: Path, seed: int, out: Path, cache_dir: str | None) -> dict:
    tl.train(str(folder), strategy="finetune", resolution=112, seed=seed + SEED_SHIFT, out=str(out), cache_dir=cache_dir)
    members = [test_probabilities(run / "model", folder) for run in (multicut_run, finetune_run, out)]
    labels = members[0][1]
    classes = tuple(str(c) for c in range(members[0][0].shape[1]))
    scores = {}
    for name, weights in COMBINATIONS.items():
        mixed = sum(weight * probabilities for weight, (probabilities, _) in zip(weights, members))
        scores[name] = classification_metrics(labels, mixed.argmax(1), classes)["balanced_accuracy"]
    return scores


def folder_rows(args: argparse.Namespace, run: Callable[..., dict]) -> dict[str, dict]:
    """Each ``--data`` folder's saved scores by ``<set>@<seed>``, those missing first scored by
    ``run(folder, finetune_run, multicut_run, seed, out, cache_dir)`` on the ``--runs`` and
    ``--multicut`` runs of it (unless ``--report``)."""
    rows = {}
    for name in args.data:
        for seed in args.seeds:
            cell = f"{name}-seed{seed}"
            path = args.out / f"{cell}.json"
            if not args.report:
                record(path, functools.partial(run, args.runs / "data" / cell, args.runs / "runs" / f"{cell}-finetune-table",
                                               args.multicut / "runs" / f"{cell}-multicut-table", seed,
                                               args.out / "runs" / cell, args.cache_dir))  # fmt: skip
            if path.exists():
                rows[f"{name}@{seed}"] = json.loads(path.read_text())
    return rows


def against_reference(rows: dict[str, dict], name: str, reference: str) -> tuple[float, dict]:
    """The mean test balanced accuracy (points) of the combination ``name`` over ``rows``, and the
    exact sign-flip test by data set of its change against ``reference``."""
    mean = 100 * np.mean([row[name] for row in rows.values()])
    test = paired_test_by_set({cell: {"a": -100 * row[name], "b": -100 * row[reference]} for cell, row in rows.items()},
                              "a", "b")  # fmt: skip
    return mean, test


def main() -> None:
    args = arguments(__doc__, "runs/finetune-seeds", (), (0,), extend=lambda parser: (
        parser.add_argument("--runs", type=Path, required=True),
        parser.add_argument("--multicut", type=Path, required=True)))  # fmt: skip
    rows = folder_rows(args, one_folder)
    print(f"{len(rows)} folders; mean test balanced accuracy, change against the pair (by data set)")
    for name in COMBINATIONS:
        mean, test = against_reference(rows, name, REFERENCE)
        print(f"  {name}: {mean:.2f} ({test['mean_difference']:+.2f}, p = {test['p_value']:.2g} over {test['sets']})")


if __name__ == "__main__":
    main()
