"""Crop or squash, decided on the user's images (:mod:`transferlab.advisor.fit`)."""

import json

import numpy as np
from conftest import run
from PIL import Image

import transferlab as tl
from transferlab.advisor.fit import SQUARE, compare_fits


def _blocks(separable: np.ndarray, labels: np.ndarray, seed: int) -> list[np.ndarray]:
    """Two cuts of features: noise, with the class added to the images marked ``separable``."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(len(labels), 8))
    signal = noise.copy()
    signal[separable, 0] += 6.0 * (2 * labels[separable] - 1)
    return [noise, signal]


def test_squash_replaces_the_crop_only_where_it_classifies_more_of_the_same_images_right():
    labels = np.repeat([0, 1], 30)
    everywhere, half = np.ones(60, dtype=bool), np.arange(60) % 2 == 0
    clear = compare_fits(_blocks(half, labels, 0), _blocks(everywhere, labels, 0), labels, 2.0)
    assert clear.fit == "squash" and clear.squash > clear.crop and clear.only_squash > clear.only_crop
    assert "squash" in clear.reason and "2.00:1" in clear.reason
    tie = compare_fits(_blocks(everywhere, labels, 0), _blocks(everywhere, labels, 0), labels, 1.33)
    assert tie.fit == "crop" and tie.only_crop == tie.only_squash == 0  # a tie keeps every strategy's default
    worse = compare_fits(_blocks(everywhere, labels, 0), _blocks(half, labels, 0), labels, 1.33)
    assert worse.fit == "crop" and worse.only_crop > worse.only_squash
    few = everywhere.copy()
    few[:6] = False  # the crop loses the class on six images of sixty: a few more wrong, and that decides
    slight = compare_fits(_blocks(few, labels, 0), _blocks(everywhere, labels, 0), labels, 1.33)
    assert slight.fit == "squash" and 1 <= slight.only_squash - slight.only_crop <= 6


def write_side_marked(root, per_class: int, seed: int = 0):
    """Wide images (120 x 40) of grey noise whose class is only in a band at one side: red or blue.
    A centre crop cuts every band off; the whole image stretched square keeps it."""
    rng = np.random.default_rng(seed)
    for name, colour in (("red", (230, 20, 20)), ("blue", (20, 20, 230))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(90, 170, (40, 120, 3)).astype(np.uint8)
            side = slice(0, 14) if rng.random() < 0.5 else slice(106, 120)
            pixels[:, side] = colour
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_the_advisor_squashes_images_whose_classes_sit_at_the_sides_and_the_model_keeps_it(tmp_path):
    data = write_side_marked(tmp_path / "strips", per_class=10)
    cache = tmp_path / "cache"
    advised = run("advise", str(data), "--resolution", "32", "--time-budget", "0", "--out", str(tmp_path / "plan"),
                  cache=cache)  # fmt: skip
    assert advised.returncode == 0, advised.stderr
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    # the evidence drawn beside the plan: the depths; no check ran (--time-budget 0), so no candidates
    assert (tmp_path / "plan" / "depth.png").stat().st_size > 0 and not (tmp_path / "plan" / "checked.png").exists()
    check = plan["fit_check"]
    assert plan["fit"] == check["fit"] == "squash" and check["widest"] == 3.0
    assert check["squash"] == 1.0 and check["crop"] < 0.8  # the crop sees grey noise only
    assert "Fit: images up to 3.00:1" in plan["explanation"]
    assert plan["resolved_config"]["fit"] == "squash"

    trained = run("train", str(data), "--strategy", "head", "--fit", "squash", "--resolution", "32", "--out",
                  str(tmp_path / "run"), cache=cache)  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    model = tl.load(tmp_path / "run" / "model")
    assert model.fit == "squash"
    predictions = model.predict([data / "red" / "0.png", data / "blue" / "0.png"], top_k=1)
    assert [p.top[0][0] for p in predictions] == ["red", "blue"]
    assert model.evaluate(str(data))["accuracy"] == 1.0


def test_square_images_are_cropped_without_a_second_look(tmp_path):
    from conftest import write_folder

    data = write_folder(tmp_path / "d", per_class=6)
    plan = tl.advise(str(data), resolution=32, cache_dir=str(tmp_path / "cache"), time_budget="0")
    assert plan.fit == "crop" and plan.fit_check["widest"] <= SQUARE and plan.fit_check["squash"] is None
    assert "Fit:" not in plan.explanation
