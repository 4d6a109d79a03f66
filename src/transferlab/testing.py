"""The contract every strategy keeps, checked the way scikit-learn's ``check_estimator`` checks an
estimator: :func:`check_strategy` proves that a table entry (a built-in one, or yours registered
with :func:`.strategies.register_strategy`) works everywhere a strategy must, through the real
command line:

* its stages are registered and no two of them share a name;
* ``transferlab train --help`` offers it, ``transferlab strategies`` describes it;
* a tiny run trains; the saved model reloads and scores what the run measured;
* the model exports to ONNX, its logits equal to PyTorch's;
* a run interrupted (after its first checkpoint, or after its first stage when it trains no
  network) resumes to the history and accuracy of the uninterrupted run;
* when it has a forecast anchor, the forecaster fits and forecasts it and the study runs it.

:func:`write_image_folder` writes the tiny image folders it trains on (three colours, easy but not
trivial), for your own tests too.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}
TRAIN_PER_CLASS, TEST_PER_CLASS = 10, 4


class StrategyContractError(AssertionError):
    """A strategy broke its contract; the message says which part and how."""


def make_image(colour: tuple[int, int, int], rng: np.random.Generator, size: int = 40) -> Image.Image:
    """A noisy image tinted with ``colour`` and a random bright square: easy but not trivial."""
    pixels = rng.normal(0, 25, (size, size, 3)) + np.asarray(colour)
    x, y = rng.integers(0, size // 2, 2)
    pixels[y : y + size // 3, x : x + size // 3] += 50
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def write_image_folder(root: str | Path, per_class: int = 12, classes: tuple[str, ...] = tuple(COLOURS),
                       seed: int = 0) -> Path:  # fmt: skip
    """``root/<colour>/<colour>_NNN.png``: ``per_class`` 40-pixel images of each colour; returns ``root``."""
    root, rng = Path(root), np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            make_image(COLOURS[name], rng).save(root / name / f"{name}_{i:03d}.png")
    return root


class _Interrupted(Exception):
    """Raised into a run to stand for a kill."""


def _fail(name: str, part: str, detail: str) -> StrategyContractError:
    return StrategyContractError(f"strategy {name!r}, {part}: {detail}")


def _check_stages(strategy) -> None:
    from .errors import ConfigError
    from .trainer.stages import stage_function

    if len(set(strategy.stages)) != len(strategy.stages):
        raise _fail(strategy.name, "stages", f"a stage is named twice in {strategy.stages}")
    for stage in strategy.stages:
        try:
            stage_function(stage)
        except ConfigError as error:
            raise _fail(strategy.name, "stages", str(error)) from None


def _run_cli(argv: list[str]) -> str:
    """``transferlab ARGV`` in this process (so a strategy registered here is known); its output."""
    from .cli import main

    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's --help and its errors
            code = exit_.code
    if code not in (0, None):
        raise RuntimeError(f"'transferlab {' '.join(argv)}' exited with {code}")
    return output.getvalue()


def _check_cli(strategy) -> None:
    from .cli import commands
    from .strategies import describe

    choices = next(a for a in commands()["train"]._actions if "--strategy" in a.option_strings).choices
    if strategy.name not in choices:
        raise _fail(strategy.name, "command line", f"--strategy offers {', '.join(choices)}, not it")
    if describe(strategy) not in _run_cli(["strategies"]):
        raise _fail(strategy.name, "command line", "'transferlab strategies' does not describe it")


def _train_argv(strategy, data: Path, out: Path, cache: Path) -> list[str]:
    steps = ["--epochs", "2", "--batch-size", "8"] if strategy.trains_body else []  # the computed heads take no steps
    return ["train", str(data), "--strategy", strategy.name, "--out", str(out),
            "--resolution", "32", "--val-fraction", "0.3", "--cache-dir", str(cache), *steps]  # fmt: skip


def _check_trains_reloads_exports(strategy, data: Path, out: Path, cache: Path) -> dict:
    import transferlab as tl

    from .errors import ExportError

    _run_cli(_train_argv(strategy, data, out, cache))
    metrics = json.loads((out / "metrics.json").read_text())
    if metrics["strategy"] != strategy.name or metrics["num_test"] != TEST_PER_CLASS * len(COLOURS):
        raise _fail(strategy.name, "training", f"metrics.json says {metrics['strategy']} on {metrics['num_test']} images")
    model = tl.load(out / "model")
    again = model.evaluate(str(data / "test"))
    if abs(again["accuracy"] - metrics["test_accuracy"]) > 1e-6 or again["confusion_matrix"] != metrics["confusion_matrix"]:
        raise _fail(strategy.name, "reload", f"the saved model scores {again['accuracy']:.4f}, the run measured "
                                             f"{metrics['test_accuracy']:.4f}")  # fmt: skip
    try:
        model.export("onnx")
    except ExportError as error:
        raise _fail(strategy.name, "export", str(error)) from None
    return metrics


def _killed_once(strategy):
    """A patch under which the next run is killed once: after its first checkpoint when it trains a
    network, else after its first stage returned (nothing written yet)."""
    from .trainer import loops, train

    killed = []

    def kill() -> None:
        if not killed:
            killed.append(True)
            raise _Interrupted

    if strategy.trains_body:
        save = loops._save_checkpoint

        def saving_then_killed(*args, **kwargs):
            save(*args, **kwargs)
            kill()

        return mock.patch.object(loops, "_save_checkpoint", saving_then_killed)
    find = train.stage_function

    def stage_then_killed(name: str):
        def run(*args, **kwargs):
            result = find(name)(*args, **kwargs)
            kill()
            return result

        return run

    return mock.patch.object(train, "stage_function", stage_then_killed)


def _check_resume(strategy, data: Path, out: Path, cache: Path, whole: dict) -> None:
    argv = _train_argv(strategy, data, out, cache)
    with _killed_once(strategy):
        try:
            _run_cli(argv)
        except _Interrupted:
            pass
        else:
            raise _fail(strategy.name, "resume", "the kill never came: the run saved no checkpoint")
    _run_cli([*argv, "--resume"])
    resumed = json.loads((out / "metrics.json").read_text())
    if resumed["history"] != whole["history"] or resumed["test_accuracy"] != whole["test_accuracy"]:
        raise _fail(strategy.name, "resume", f"resumed to accuracy {resumed['test_accuracy']:.4f} over "
                                             f"{len(resumed['history'])} epochs, uninterrupted {whole['test_accuracy']:.4f} "
                                             f"over {len(whole['history'])}")  # fmt: skip


def _check_forecast_and_study(strategy) -> None:
    from .advisor.study import study_runs
    from .forecast import Signals, fit_forecaster
    from .strategies import forecast_options

    if strategy.anchor is None:
        return
    if strategy.name not in forecast_options():
        raise _fail(strategy.name, "forecast", "has an anchor but is not among the forecast options")
    rng = np.random.default_rng(0)
    rows = []
    for images in (5, 10, 30, 100):
        signals = Signals(images, *rng.uniform(0.5, 0.9, 3), 0.2, 0.05, 0.01, 0.9)
        rows.append((signals, {option: float(rng.uniform(0.5, 0.9)) for option in forecast_options()}))
    forecasts = {f.option for f in fit_forecaster(rows, len(rows)).predict(rows[0][0])}
    if strategy.name not in forecasts:
        raise _fail(strategy.name, "forecast", f"the forecaster forecasts {', '.join(sorted(forecasts))}, not it")
    runs = {name for name, _ in study_runs(["early", "middle", "final"])}
    expected = set(strategy.members) or {strategy.name}
    if not expected <= runs:
        raise _fail(strategy.name, "study", f"the study runs {', '.join(sorted(runs))}, not {', '.join(sorted(expected))}")


def check_strategy(strategy, workdir: str | Path | None = None) -> dict:
    """Check that ``strategy`` (a registered table entry, or its name) keeps the contract above; a
    :class:`StrategyContractError` names the first part it breaks. Trains on tiny folders at 32 px
    (a minute or two on 2 CPU cores for a strategy that trains a network) in ``workdir`` (default:
    a temporary folder); returns the uninterrupted run's metrics."""
    from .strategies import STRATEGIES, get_strategy

    strategy = get_strategy(strategy) if isinstance(strategy, str) else strategy
    if STRATEGIES.get(strategy.name) is not strategy:
        raise _fail(strategy.name, "table", "not registered (strategies.register_strategy)")
    _check_stages(strategy)
    _check_cli(strategy)
    _check_forecast_and_study(strategy)
    with tempfile.TemporaryDirectory(prefix="transferlab-check-") as scratch:
        root = Path(workdir or scratch)
        data = root / "data"
        if not (data / "test").exists():
            write_image_folder(data / "train", per_class=TRAIN_PER_CLASS)
            write_image_folder(data / "test", per_class=TEST_PER_CLASS, seed=7)
        cache = root / "cache"
        whole = _check_trains_reloads_exports(strategy, data, root / f"{strategy.name}-whole", cache)
        _check_resume(strategy, data, root / f"{strategy.name}-interrupted", cache, whole)
    return whole
