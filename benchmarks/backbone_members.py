"""Frozen heads on other backbones beside the pair: does a second architecture pay where a second seed did not?

Two networks fine-tuned from the same start are too alike to average (``finetune_seeds.py``); heads on
different pretrained architectures see the images through other features. For every folder an
``imbalanced.py`` run left (``--runs``: its ``data/`` and its ``finetune`` runs; ``--multicut``: a run of
the same folders holding ``multicut`` on the default backbone), ``multicut`` trains again on each of
``--backbones`` (the same labelled images and split, closed-form, seconds), and the saved models' test
probabilities are combined, equal weights, no temperatures: the pair (``multicut`` + ``finetune``), each
head alone, the heads averaged, and the pair with the other heads beside it (the frozen half shared
among the heads, or every model an equal share). Mean test balanced accuracy, and the change against
the pair with an exact sign-flip test over the data sets. One JSON file per folder in --out; a rerun
resumes.

    cd benchmarks && python backbone_members.py --runs ../runs/user-12w --multicut ../runs/user-12d \\
        --out ../runs/backbone-members-12 --cache-dir /tmp/study-cache --seeds 0 1 \\
        --data emoji-apple emoji-google emoji-twitter emoji-facebook emoji-fluent furniture cartoons
"""

from __future__ import annotations

import functools
from pathlib import Path

from finetune_seeds import against_reference, folder_rows, test_probabilities
from resumable import arguments

import transferlab as tl
from transferlab.metrics import classification_metrics

REFERENCE = "the pair (multicut + finetune)"


def combinations(backbones: list[str]) -> dict[str, dict[str, float]]:
    """Name: weight of each model (``multicut`` and ``finetune`` on the default backbone, ``multicut`` on each other one)."""
    heads = ["multicut", *backbones]
    share = 1 / len(heads)
    found = {REFERENCE: {"multicut": 0.5, "finetune": 0.5}, "finetune": {"finetune": 1.0}}
    found.update({f"multicut on {head}" if head != "multicut" else "multicut": {head: 1.0} for head in heads})
    found["the heads averaged"] = {head: share for head in heads}
    found["finetune 1/2, the heads share 1/2"] = {"finetune": 0.5, **{head: share / 2 for head in heads}}
    found["every model equal"] = {name: 1 / (len(heads) + 1) for name in ["finetune", *heads]}
    for backbone in backbones:
        found[f"the pair + {backbone}, thirds"] = {"multicut": 1 / 3, "finetune": 1 / 3, backbone: 1 / 3}
    return found


def one_folder(folder: Path, finetune_run: Path, multicut_run: Path, seed: int, out: Path, cache_dir: str | None,
               backbones: list[str]) -> dict:  # fmt: skip
    members = {"multicut": test_probabilities(multicut_run / "model", folder),
               "finetune": test_probabilities(finetune_run / "model", folder)}  # fmt: skip
    for backbone in backbones:
        tl.train(str(folder), strategy="multicut", backbone=backbone, resolution=112, seed=seed, out=str(out / backbone),
                 cache_dir=cache_dir)  # fmt: skip
        members[backbone] = test_probabilities(out / backbone / "model", folder)
    labels = members["multicut"][1]
    classes = tuple(str(c) for c in range(members["multicut"][0].shape[1]))
    scores = {}
    for name, weights in combinations(backbones).items():
        mixed = sum(weight * members[model][0] for model, weight in weights.items())
        scores[name] = classification_metrics(labels, mixed.argmax(1), classes)["balanced_accuracy"]
    return scores


def main() -> None:
    args = arguments(__doc__, "runs/backbone-members", (), (0,), extend=lambda parser: (
        parser.add_argument("--runs", type=Path, required=True),
        parser.add_argument("--multicut", type=Path, required=True),
        parser.add_argument("--backbones", nargs="+", default=["mobilenet_v2", "efficientnet_lite2"])))  # fmt: skip
    rows = folder_rows(args, functools.partial(one_folder, backbones=args.backbones))
    print(f"{len(rows)} folders; mean test balanced accuracy, change against the pair (by data set)")
    for name in combinations(args.backbones):
        mean, test = against_reference(rows, name, REFERENCE)
        higher = sum(row[name] > row[REFERENCE] for row in rows.values())
        lower = sum(row[name] < row[REFERENCE] for row in rows.values())
        print(f"  {name}: {mean:.2f} ({test['mean_difference']:+.2f}, {higher} / {lower}, "
              f"p = {test['p_value']:.2g} over {test['sets']})")  # fmt: skip


if __name__ == "__main__":
    main()
