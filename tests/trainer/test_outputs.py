"""What a run writes: the worst-confused pairs, and the report as a real browser renders it."""

import json

import numpy as np
import pytest
from conftest import CHROMIUM, render

import transferlab as tl
from transferlab.report import plot_curves
from transferlab.trainer.outputs import _drawn_history, worst_confusions


def test_worst_confusions_by_hand():
    counts = np.array([[5, 3, 0], [1, 6, 0], [4, 0, 2]])
    assert worst_confusions(counts, ("a", "b", "c")) == [("c", "a", 4), ("a", "b", 3), ("b", "a", 1)]
    assert worst_confusions(np.eye(3, dtype=int), ("a", "b", "c")) == []


def test_the_curves_drawn_are_the_networks_epochs_and_a_single_row_shows_as_a_point():
    """An ensemble's last stage is its computed head (one row); its report draws the fine-tuned
    member's epochs, and a run of one row draws a point rather than an invisible line."""
    row = {"epoch": 1, "train_loss": 0.1, "val_loss": 0.2, "train_accuracy": 1.0, "val_accuracy": 0.9}
    epochs = [{**row, "epoch": e} for e in (1, 2, 3)]
    assert _drawn_history({"history": [row], "network_history": epochs}) == epochs
    assert _drawn_history({"history": [row]}) == [row]
    lines = [line for axis in plot_curves([row]).axes for line in axis.get_lines()]
    assert len(lines) == 4 and all(line.get_marker() == "o" and len(line.get_xdata()) == 1 for line in lines)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make test installs it)")
def test_train_and_evaluate_reports_load_every_image_in_a_browser(tmp_path):
    from conftest import write_folder

    data = write_folder(tmp_path / "d" / "train", per_class=12)
    write_folder(tmp_path / "d" / "test", per_class=6, seed=3)
    result = tl.train(str(tmp_path / "d"), strategy="auto", resolution=32, epochs=2,
                      out=str(tmp_path / "run"), cache_dir=str(tmp_path / "c"))  # fmt: skip
    seen = render(tmp_path / "run" / "report.html", tmp_path, tmp_path / "report.png")
    # when something was confused; when the plan fine-tunes; the plan's evidence drawn (depths; the check's candidates)
    optional = ("confusions.png", "interpolation.png", "depth.png", "checked.png")
    assert (tmp_path / "run" / "depth.png").exists() and (tmp_path / "run" / "checked.png").exists()  # auto checked
    expected = 3 + sum((tmp_path / "run" / name).exists() for name in optional)
    assert seen["images"] == expected and seen["broken"] == 0
    assert seen["tables"] >= 5  # summary, per class, confused pairs, the plan's evidence, settings
    assert (tmp_path / "report.png").stat().st_size > 20_000
    html = (tmp_path / "run" / "report.html").read_text()
    assert "The plan&#x27;s evidence per cut" in html and result.plan.explanation.split(";")[0] in html
    metrics = result.model.evaluate(str(data.parent), out=tmp_path / "ev")
    assert metrics["num_images"] == 18
    seen = render(tmp_path / "ev" / "report.html", tmp_path)
    assert seen["images"] == 1 and seen["broken"] == 0 and seen["tables"] >= 2
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["plan"]["strategy"] == result.plan.strategy
