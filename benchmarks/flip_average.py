"""Test-time flips: would averaging each saved model's prediction over the image and its mirror image help?

Every model that ``imbalanced.py`` saved in --runs (``RUNS/runs/<folder>-seed<k>-<option>-<weights>/model``)
predicts its folder's test split twice, as the image and mirrored left to right; the two
probability vectors averaged give the flip-averaged prediction. Printed per option: the mean change
of test balanced accuracy in points, how many folders rose and fell, and an exact sign-flip test over
the data sets (each set's seeds averaged first). One JSON file per model in --out; a rerun resumes.

    cd benchmarks && python flip_average.py --runs ../runs/user-40d ../runs/user-40e --out ../runs/flip-average
"""

from __future__ import annotations

import argparse
import functools
import json
import re
from pathlib import Path

import numpy as np
import torch
from resumable import record

from transferlab.advisor.study import paired_test_by_set
from transferlab.bundle import load_bundle
from transferlab.datasets import load_dataset
from transferlab.features import compute_outputs, predict_pixels
from transferlab.metrics import classification_metrics

RUN_NAME = re.compile(r"(?P<folder>(?P<set>.+)-seed(?P<seed>\d+))-(?P<option>.+)-(?P<weights>[a-z]+)")


def flip_averaged(model: Path, data: Path) -> dict:
    """Test balanced accuracy of the model in ``model`` on ``data``'s test split: as it predicts, on
    the mirrored images alone, and the two predictions' probabilities averaged."""
    network, info = load_bundle(model)
    test = load_dataset(str(data)).test.with_fit(info.preprocessing.fit)
    pixels = torch.from_numpy(compute_outputs(None, test, info.preprocessing.resolution, desc="decode").values)
    plain, mirrored = predict_pixels(network, pixels), predict_pixels(network, pixels.flip(-1))
    averaged = torch.logsumexp(torch.stack([plain.log_softmax(1), mirrored.log_softmax(1)]), 0)
    labels = np.asarray([info.classes.index(c) for c in test.classes])[test.labels]
    scores = {name: classification_metrics(labels, logits.argmax(1).numpy(), info.classes)["balanced_accuracy"]
              for name, logits in (("plain", plain), ("mirrored", mirrored), ("averaged", averaged))}  # fmt: skip
    return {"model": str(model), **scores}


def report(results: list[dict]) -> None:
    by_option: dict[str, dict[str, dict]] = {}
    for r in results:
        model = Path(r["model"])
        name = RUN_NAME.fullmatch(model.parent.name)
        cell = f"{name['set']}@{model.parents[2].name}-{name['seed']}"  # a set's models averaged first in the test
        by_option.setdefault(name["option"], {})[cell] = {"plain": r["plain"], "averaged": r["averaged"]}
    print("| option | models | averaged over the flip, points | rose / fell | by data set |")
    print("|---|---|---|---|---|")
    for option, cells in sorted(by_option.items()):
        changes = np.array([100 * (c["averaged"] - c["plain"]) for c in cells.values()])
        test = paired_test_by_set(cells, "plain", "averaged")  # two-sided: the sign of the difference does not matter
        print(f"| {option} | {len(changes)} | {changes.mean():+.2f} | {(changes > 0).sum()} / {(changes < 0).sum()} "
              f"| p = {test['p_value']:.2f} ({test['sets']} sets) |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="imbalanced.py's --out folders")
    parser.add_argument("--out", type=Path, default=Path("runs/flip-average"))
    parser.add_argument("--report", action="store_true", help="only print the table of the finished models")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for runs in args.runs:
        for model in [] if args.report else sorted(runs.glob("runs/*/model")):
            folder = RUN_NAME.fullmatch(model.parent.name)["folder"]
            record(args.out / f"{runs.name}-{model.parent.name}.json",
                   functools.partial(flip_averaged, model, runs / "data" / folder))
    report([json.loads(p.read_text()) for p in sorted(args.out.glob("*.json"))])


if __name__ == "__main__":
    main()
