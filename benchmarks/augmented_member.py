"""The study's ensemble with its fine-tuned member augmented (as ``--strategy ensemble`` trains it from
30 labelled images a class) against the same ensemble with the unaugmented member, from the saved models.

Every finished seed of a study at ``--from-size`` images per class or more holds both members'
runs (``finetune-final`` and ``finetune-final-augmented``) beside ``multicut-all``; each pair is
combined as training combines an ensemble (``trainer.train.ensemble_stage``: temperatures on the
validation split, the ensemble's class weights) and scored by balanced accuracy on the test split.
Nothing is trained. Prints each seed, the mean difference and its paired test by data set.

    cd benchmarks && python augmented_member.py --study ../runs/study --cache-dir /tmp/study-cache
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from transferlab.advisor import study
from transferlab.metrics import classification_metrics
from transferlab.prepare import prepare
from transferlab.strategies import ensemble_entry
from transferlab.trainer.train import ensemble_stage

MEMBERS = {"unaugmented": "finetune-final", "augmented": "finetune-final-augmented"}


def seed_scores(seed_folder: Path, pool: str, cache_dir: str) -> dict[str, float]:
    """Test balanced accuracy (%) of ``multicut`` paired with each fine-tuned member of one seed."""
    data, size = seed_folder.parent.name.rsplit("@", 1)
    run = prepare(study._base_config(data, int(size), int(seed_folder.name.removeprefix("seed")), study.POOLS[pool], cache_dir))
    multicut = study.saved_outputs(run, seed_folder / "multicut-all" / "model")
    scores = {}
    for name, member in MEMBERS.items():
        stage, _ = ensemble_stage([multicut, study.saved_outputs(run, seed_folder / member / "model")],
                                  class_weight=ensemble_entry().class_weight)  # fmt: skip
        predicted = stage.logits["test"].numpy().argmax(1)
        scores[name] = 100 * classification_metrics(stage.labels["test"], predicted, run.classes)["balanced_accuracy"]
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=Path("../runs/study"))
    parser.add_argument("--pool", default="greyscale", choices=sorted(study.POOLS))
    parser.add_argument("--cache-dir", default="/tmp/study-cache")
    parser.add_argument("--from-size", type=int, default=30, help="images per class from which the member is augmented")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rows = {}
    for seed_folder in sorted(args.study.glob("*@*/seed*")):
        if int(seed_folder.parent.name.rsplit("@", 1)[1]) < args.from_size:
            continue
        if all((seed_folder / folder / "model").is_dir() for folder in ("multicut-all", *MEMBERS.values())):
            rows[f"{seed_folder.parent.name}-{seed_folder.name}"] = scores = seed_scores(seed_folder, args.pool, args.cache_dir)
            print(f"{seed_folder.parent.name} {seed_folder.name}: unaugmented member {scores['unaugmented']:.2f}, "
                  f"augmented {scores['augmented']:.2f}")  # fmt: skip
    test = study.paired_test_by_set(rows, "augmented", "unaugmented")
    print(f"{len(rows)} seeds: the augmented member changes the ensemble by "
          f"{np.mean([r['augmented'] - r['unaugmented'] for r in rows.values()]):+.2f} points on average; "
          f"by data set {-test['mean_difference']:+.2f} (p = {test['p_value']:.2f}, {test['sets']} sets)")  # fmt: skip


if __name__ == "__main__":
    main()
