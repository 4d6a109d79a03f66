"""``transferlab suggest``: the selections pick what they promise on constructed features, and
the command writes the CSV, the contact sheet and the report, with the learning curve's
forecast, or refuses bad inputs in one line."""

import csv

import numpy as np
import pytest

import transferlab as tl
from transferlab.selection import SELECTIONS, margins, select

from conftest import assert_one_line_error, run, run_here, write_folder


def _probabilities(gaps: np.ndarray) -> np.ndarray:
    """Two-class probabilities whose margins are ``gaps``."""
    return np.column_stack([(1 + gaps) / 2, (1 - gaps) / 2])


def test_margin_picks_the_most_uncertain_first():
    gaps = np.array([0.9, 0.1, 0.5, 0.0, 0.7])
    assert margins(_probabilities(gaps)) == pytest.approx(gaps)
    assert select(np.zeros((5, 2)), _probabilities(gaps), 3, "margin").tolist() == [3, 1, 2]


def test_kcenter_and_badge_spread_their_picks_over_the_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(4) * 10  # four far-apart clusters of 25 images each
    features = np.vstack([c + rng.normal(size=(25, 4)) * 0.1 for c in centres])
    gaps = np.full(100, 0.9)
    gaps[[0, 1, 2, 3]] = 0.0  # the most uncertain four, all in the first cluster
    gaps[[4, 30, 31, 32, 55, 56, 57, 80, 81, 82, 83, 84]] = 0.05  # more uncertain ones in every cluster
    probabilities = _probabilities(gaps)
    picked = select(features, probabilities, 4, "kcenter")
    assert len(set(picked.tolist())) == 4 and sorted(picked // 25) == [0, 1, 2, 3]  # one per cluster
    assert (select(features, probabilities, 4, "margin") // 25 == 0).all()  # uncertainty alone: one cluster
    assert set(select(features, probabilities, 8, "badge") // 25) == {0, 1, 2, 3}  # sampled, but spread over all
    assert set(select(features, probabilities, 8, "margin") // 25) == {0, 1}


def test_badge_starts_with_the_largest_gradient_and_never_repeats():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(50, 8))
    gaps = rng.uniform(0.3, 1.0, 50)
    gaps[17] = 0.0  # the most uncertain, at an ordinary feature norm
    features[17] *= 3
    picked = select(features, _probabilities(gaps), 20, "badge", seed=3)
    assert picked[0] == 17 and len(set(picked.tolist())) == 20
    assert select(features, _probabilities(gaps), 20, "badge", seed=3).tolist() == picked.tolist()  # seeded


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("suggest")
    write_folder(root / "d", per_class=8)
    write_folder(root / "pool", per_class=10, seed=4)
    unlabeled = root / "unlabeled"
    unlabeled.mkdir()
    for path in sorted((root / "pool").rglob("*.png")):
        path.rename(unlabeled / path.name)
    (unlabeled / "broken.jpg").write_bytes(b"not a jpeg")
    config = tl.TrainConfig(data=str(root / "d"), strategy="head", out=str(root / "run"), resolution=32, val_fraction=0.25,
                            cache_dir=str(root / "cache"))  # fmt: skip
    tl.train(config)
    return root


@pytest.mark.parametrize("method", SELECTIONS)
def test_suggest_writes_the_csv_the_contact_sheet_and_a_forecast(trained, method, tmp_path):
    result = tl.suggest(trained / "run" / "model", trained / "unlabeled", n=7, out=tmp_path / "out", method=method)
    assert result["images"] == 30 and result["unreadable"] == 1
    with open(tmp_path / "out" / "suggestions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["rank"]) for r in rows] == list(range(1, 8)) and len({r["image"] for r in rows}) == 7
    assert all(r["predicted"] in ("blue", "green", "red") for r in rows)
    assert (tmp_path / "out" / "contact_sheet.png").stat().st_size > 1000 and (tmp_path / "out" / "report.html").exists()
    forecast = result["forecast"]
    assert forecast["images_per_class"] == 6 and forecast["added"] == pytest.approx(7 / 3)
    assert [n for n, _ in forecast["curve"]] == [2, 3, 6] and "forecast to add" in forecast["text"]


def test_the_cli_prints_the_best_first_and_the_forecast(trained, tmp_path):
    result = run("suggest", str(trained / "run" / "model"), str(trained / "unlabeled"), "-n", "12", "--out",
                 str(tmp_path / "out"), cache=tmp_path / "cache")  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("  1. ") and "the model's guess" in lines[0] and "... and 2 more" in lines[10]
    assert lines[-1].startswith("forecast: the run's learning curve")


@pytest.mark.parametrize(
    "args, expected",
    [
        (("-n", "0"), "-n must be at least 1, got 0."),
        (("--unlabeled-missing",), "does not exist"),
        (("--method", "entropy"), "invalid choice: 'entropy'"),
    ],
    ids=["n-zero", "missing-folder", "unknown-method"],
)
def test_bad_inputs_give_one_line_errors(trained, tmp_path, args, expected):
    folder = str(tmp_path / "nowhere") if args == ("--unlabeled-missing",) else str(trained / "unlabeled")
    extra = () if args == ("--unlabeled-missing",) else args
    result = run_here("suggest", str(trained / "run" / "model"), folder, *extra, "--out", str(tmp_path / "out"),
                 cache=tmp_path / "cache")  # fmt: skip
    assert_one_line_error(result, expected)
