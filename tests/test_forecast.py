"""The forecaster: per-option ridge models on the advisor's signals, and the choice with intervals (torch-free)."""

import math

import numpy as np
import pytest

from transferlab.forecast import Forecast, Forecaster, Signals, choose, fit_forecaster


def _signals(per_class, final, stage, gain=0.2, slope=0.05, pilot=0.0):
    return Signals(per_class, final, stage, max(final, stage), gain, slope, pilot)


def _rows(n=60, seed=0):
    """Constructed outcomes: fine-tuning gains 2 points per doubling of the data over the best probe,
    head lands 3 points under its probe, truncate at its probe, scratch 30 points under; plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        per_class = int(rng.choice([5, 10, 30, 100, 300]))
        final, stage = rng.uniform(0.4, 0.9), rng.uniform(0.4, 0.9)
        signals = _signals(per_class, final, stage, pilot=rng.normal(0, 0.02))
        noise = rng.normal(0, 0.01, 4)
        rows.append((signals, {"head": final - 0.03 + noise[0], "truncate": stage + noise[1],
                               "finetune": signals.probe_best + 0.02 * math.log2(per_class / 10) + noise[2],
                               "scratch": signals.probe_best - 0.3 + noise[3]}))  # fmt: skip
    return rows


def test_the_fit_recovers_a_constructed_relation_and_its_noise():
    forecaster = fit_forecaster(_rows(), cells=60)
    forecasts = {f.option: f for f in forecaster.predict(_signals(300, 0.8, 0.7))}
    assert forecasts["head"].accuracy == pytest.approx(0.77, abs=0.01)
    assert forecasts["truncate"].accuracy == pytest.approx(0.70, abs=0.01)
    assert forecasts["finetune"].accuracy == pytest.approx(0.8 + 0.02 * math.log2(30), abs=0.015)
    assert forecasts["scratch"].accuracy == pytest.approx(0.5, abs=0.01)
    assert all(0.005 < f.spread < 0.02 for f in forecasts.values())  # the residual noise was 0.01


def test_the_forecaster_round_trips_through_json(tmp_path):
    forecaster = fit_forecaster(_rows(20), cells=20, source="constructed")
    assert Forecaster.load(forecaster.save(tmp_path / "f.json")) == forecaster


def test_truncate_is_not_forecast_for_a_body_without_earlier_cuts():
    forecaster = fit_forecaster(_rows(20), cells=20)
    options = [f.option for f in forecaster.predict(_signals(10, 0.8, float("nan")))]
    assert options == ["head", "finetune", "scratch"]


def test_a_pilot_not_run_reads_as_the_studied_mean_and_one_that_ran_moves_the_forecast():
    rows = [(_signals(s.images_per_class, s.probe_final, s.probe_stage, pilot=s.pilot_gain),
             {**outcome, "finetune": outcome["finetune"] + 2 * s.pilot_gain}) for s, outcome in _rows()]  # fmt: skip
    forecaster = fit_forecaster(rows, cells=60)
    at_mean = {f.option: f.accuracy for f in forecaster.predict(_signals(30, 0.8, 0.7, pilot=forecaster.mean[-1]))}
    unmeasured = {f.option: f.accuracy for f in forecaster.predict(_signals(30, 0.8, 0.7, pilot=None))}
    assert unmeasured == pytest.approx(at_mean)
    raised = {f.option: f.accuracy for f in forecaster.predict(_signals(30, 0.8, 0.7, pilot=forecaster.mean[-1] + 0.05))}
    assert raised["finetune"] - at_mean["finetune"] == pytest.approx(0.1, abs=0.02)


def test_a_clear_winner_is_taken():
    choice = choose([Forecast("head", 0.70, 0.02), Forecast("finetune", 0.80, 0.02), Forecast("scratch", 0.3, 0.1)])
    assert choice.option == "finetune" and "clear of 'head'" in choice.reason
    assert [f.option for f in choice.forecasts] == ["finetune", "head", "scratch"]


def test_within_the_interval_the_smaller_worst_case_wins():
    """Finetune is forecast 1 point higher but is four times as uncertain: head's worst case is better."""
    choice = choose([Forecast("head", 0.79, 0.01), Forecast("finetune", 0.80, 0.04), Forecast("scratch", 0.3, 0.1)])
    assert choice.option == "head"
    assert "within each other's intervals" in choice.reason and "smaller worst-case loss" in choice.reason
