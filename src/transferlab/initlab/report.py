"""Figures and report of the init lab."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ..report import save_figure, write_report

EXPLODING_LOSS = 5 * math.log(10)  # 5x the loss of a uniform guess over 10 classes


def _mean_losses(results, init: str) -> np.ndarray:
    return np.mean([r.batch_losses for r in results if r.init == init], axis=0)


def plot_losses(results, inits, zoom: bool = False):
    """Training loss per batch (mean over seeds), one line per init; ``zoom`` drops exploding curves."""
    figure, axis = plt.subplots(figsize=(10, 5))
    colours = plt.get_cmap("tab20")
    for k, init in enumerate(inits):
        losses = _mean_losses(results, init)
        if zoom and not (np.all(np.isfinite(losses)) and losses.max() <= EXPLODING_LOSS):
            continue
        axis.plot(np.arange(1, len(losses) + 1), losses, label=init, color=colours(k % 20), linewidth=1)
    axis.set(xlabel="batch", ylabel="training loss (cross-entropy)",
             title="Training loss by initialization" + (" (without exploding curves)" if zoom else ""))  # fmt: skip
    if zoom:
        axis.set_ylim(0, math.log(10) * 1.1)
    else:
        axis.set_yscale("log")
    axis.grid(alpha=0.3)
    axis.legend(ncol=2, fontsize=8)
    figure.tight_layout()
    return figure


def plot_accuracy(summary):
    inits = list(summary)
    means = [summary[i]["val_accuracy_mean"] for i in inits]
    stds = [summary[i]["val_accuracy_std"] for i in inits]
    figure, axis = plt.subplots(figsize=(10, 4))
    axis.bar(inits, means, yerr=stds, capsize=3, color="tab:blue")
    for x, mean in enumerate(means):
        axis.text(x, mean + 0.01, f"{mean:.3f}", ha="center", fontsize=8)
    axis.set(ylabel="validation accuracy", ylim=(0, 1), title="Validation accuracy (mean and std over seeds)")
    axis.tick_params(axis="x", rotation=30)
    figure.tight_layout()
    return figure


def plot_scales(results, inits):
    """Activation and gradient std per layer (log scale), at initialization and after training."""
    figure, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    colours = plt.get_cmap("tab20")
    floor = 1e-12  # zeros would vanish from a log plot; draw them at the floor
    for row, phase in enumerate(("at_init", "after_training")):
        for col, key in enumerate(("activation_std", "gradient_std")):
            axis = axes[row, col]
            for k, init in enumerate(inits):
                stats = getattr(next(r for r in results if r.init == init), phase)
                values = [max(s[key], floor) for s in stats]
                axis.plot([s["layer"] for s in stats], values, "o-", label=init, color=colours(k % 20))
            what = "layer output" if key == "activation_std" else "weight gradient"
            axis.set(yscale="log", xlabel="layer", ylabel=f"std of {what}",
                     title=f"{what.capitalize()}s {phase.replace('_', ' ')} (seed 0)")  # fmt: skip
            axis.grid(alpha=0.3)
    axes[0, 1].legend(fontsize=7, ncol=2)
    figure.tight_layout()
    return figure


def plot_symmetry(summary):
    """Mean cosine similarity between the units of each hidden layer, at init and after training."""
    inits = list(summary)
    figure, axis = plt.subplots(figsize=(10, 4))
    width = 0.4
    for offset, key, label in ((-width / 2, "mean_cosine_at_init", "at init"), (width / 2, "mean_cosine_after", "after training")):
        axis.bar(np.arange(len(inits)) + offset, [np.mean(summary[i][key][:-1]) for i in inits], width, label=label)
    axis.set_xticks(range(len(inits)), inits, rotation=30)
    axis.set(ylabel="mean cosine between hidden units", ylim=(-0.05, 1.05),
             title="Symmetry: 1 means every hidden unit is the same unit")  # fmt: skip
    axis.legend()
    figure.tight_layout()
    return figure


def table_rows(summary) -> tuple[list[str], list[list]]:
    header = ["init", "val accuracy", "std", "with dropout on", "final train loss",
              "distinct hidden units, init -> trained", "mean cosine of hidden units, init -> trained"]  # fmt: skip
    rows = [
        [init, s["val_accuracy_mean"], s["val_accuracy_std"], s["val_accuracy_dropout_mean"], s["final_loss_mean"],
         f"{_compact(s['distinct_units_at_init'][:-1])} -> {_compact(s['distinct_units_after'][:-1])}"
         f" of {_compact(s['units'][:-1])}",
         f"{_compact(s['mean_cosine_at_init'][:-1])} -> {_compact(s['mean_cosine_after'][:-1])}"]
        for init, s in summary.items()
    ]  # fmt: skip
    return header, rows


def _compact(values: list) -> str:
    """Per-layer values as text: '[1, 1]'; a long list as its range over the layers."""
    text = [f"{v:.2f}".replace("-0.00", "0.00") if isinstance(v, float) else str(v) for v in values]
    if len(text) <= 3:
        return "[" + ", ".join(text) + "]"
    low, high = min(values), max(values)
    fmt = (lambda v: f"{v:.2f}".replace("-0.00", "0.00")) if isinstance(values[0], float) else str
    return f"{fmt(low)}..{fmt(high)} ({len(values)} layers)" if fmt(low) != fmt(high) else f"{fmt(low)} ({len(values)} layers)"


def markdown_table(summary) -> str:
    header, rows = table_rows(summary)
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def write_lab_report(out: Path, config, results, summary) -> None:
    inits = list(summary)
    figures = {
        "Training loss per batch (log scale)": save_figure(plot_losses(results, inits), out / "loss_curves.png"),
        "Training loss, zoomed": save_figure(plot_losses(results, inits, zoom=True), out / "loss_curves_zoom.png"),
        "Validation accuracy": save_figure(plot_accuracy(summary), out / "accuracy.png"),
        "Symmetry of hidden units": save_figure(plot_symmetry(summary), out / "symmetry.png"),
        "Scale of activations and gradients per layer": save_figure(plot_scales(results, inits), out / "scales.png"),
    }
    write_report(out / "report.html", f"transferlab init lab: {config.model} on {config.data}",
                 {"model": config.model, "epochs": config.epochs, "optimizer": f"{config.optimizer} lr {config.lr}",
                  "batch size": config.batch_size, "seeds": config.seeds},
                 figures, tables={"Results": table_rows(summary)})  # fmt: skip
