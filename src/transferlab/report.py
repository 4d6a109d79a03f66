"""Plots (PNG) and a self-contained ``report.html`` for a run."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from .plan import CutEvidence


def plot_curves(history: list[dict[str, float]]):
    epochs = [row["epoch"] for row in history]
    figure, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    for split in ("train", "val"):  # markers: a history of one row (a computed head) is one point
        loss_ax.plot(epochs, [row[f"{split}_loss"] for row in history], marker="o", markersize=3, label=split)
        acc_ax.plot(epochs, [row[f"{split}_accuracy"] for row in history], marker="o", markersize=3, label=split)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    for axis in (loss_ax, acc_ax):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    return figure


def plot_interpolation(alphas: list[float], val_accuracy: list[float], chosen: float):
    """Validation accuracy along the line from the linear probe (alpha 0) to the fine-tuned network (1)."""
    figure, axis = plt.subplots(figsize=(5, 3.4))
    axis.plot(alphas, val_accuracy, marker="o")
    axis.axvline(chosen, color="grey", linestyle="--", label=f"kept: alpha {chosen:g}")
    axis.set(xlabel="alpha (0: linear probe, 1: fine-tuned)", ylabel="validation accuracy", title="Interpolation")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


def plot_depth_evidence(cuts: list[str], probe: list[float], stderr: list[float], random: list[float],
                        chosen: str | None = None):  # fmt: skip
    """The linear probe's accuracy at every cut (bars: one standard error) beside the same probe on
    the backbone's random twin, the cut the plan reads (``chosen``, where it is one of them) marked."""
    figure, axis = plt.subplots(figsize=(6, 3.6))
    x = np.arange(len(cuts))
    axis.errorbar(x, probe, yerr=stderr, marker="o", capsize=3, label="pretrained weights")
    axis.plot(x, random, marker="s", linestyle="--", color="grey", label="random weights")
    if chosen in cuts:
        axis.axvline(cuts.index(chosen), color="tab:green", linestyle=":", label=f"the plan's cut: {chosen}")
    axis.set_xticks(x)
    axis.set_xticklabels(cuts, rotation=30, ha="right")
    axis.set(xlabel="cut (deeper to the right)", ylabel="probe accuracy (leave-one-out)", title="Your images, depth by depth")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def plot_checked(names: list[str], accuracy: list[float], intervals: list[tuple[float, float]],
                 forecasts: list[float | None], weights: list[float | None]):  # fmt: skip
    """Each candidate's out-of-fold accuracy with its 90% interval, its forecast (where one was made)
    beside it and its weight in its label, the first candidate on top."""
    figure, axis = plt.subplots(figsize=(6.5, 0.5 * len(names) + 1.5))
    y = np.arange(len(names))[::-1]
    low = [a - i[0] for a, i in zip(accuracy, intervals)]
    high = [i[1] - a for a, i in zip(accuracy, intervals)]
    axis.errorbar(accuracy, y, xerr=[low, high], fmt="o", capsize=3, label="out of fold (90% interval)")
    shown = [(f, row) for f, row in zip(forecasts, y) if f is not None]
    if shown:
        axis.plot([f for f, _ in shown], [row for _, row in shown], "x", color="tab:orange", label="forecast")
    axis.set_yticks(y)
    axis.set_yticklabels([name if w is None else f"{name} (weight {w:.2f})" for name, w in zip(names, weights)])
    axis.set(xlabel="accuracy", title="Checked on your images")
    axis.grid(alpha=0.3, axis="x")
    axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)  # below: clear of the bars
    figure.tight_layout()
    return figure


def plot_confusion(counts: np.ndarray, classes: tuple[str, ...], title: str = "Confusion matrix"):
    size = max(4.0, 0.55 * len(classes) + 2)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(counts, cmap="Blues")
    axis.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true", title=title)
    axis.set_xticklabels(classes, rotation=45, ha="right")
    axis.set_yticklabels(classes)
    if len(classes) <= 20:
        threshold = counts.max() / 2 if counts.size else 0
        for (row, col), value in np.ndenumerate(counts):
            axis.text(col, row, str(value), ha="center", va="center", fontsize=8,
                      color="white" if value > threshold else "black")  # fmt: skip
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    return figure


def plot_samples(images: list[np.ndarray], true: list[str], predicted: list[str], probabilities: list[float]):
    """A grid of images titled 'predicted (p)', green when right and red when wrong."""
    columns = min(8, max(1, len(images)))
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.8 * columns, 2.1 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, t, p, prob in zip(axes.flat, images, true, predicted, probabilities):
        axis.imshow(image)
        axis.set_title(f"{p} ({prob:.2f})\ntrue: {t}", fontsize=7, color="green" if p == t else "red")
    figure.tight_layout()
    return figure


def plot_contact_sheet(images: list[np.ndarray], captions: list[str]):
    """A grid of images with a caption each, in order (for a person to go through)."""
    columns = min(10, max(1, len(images)))
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, caption in zip(axes.flat, images, captions):
        axis.imshow(image)
        axis.set_title(caption, fontsize=7)
    figure.tight_layout()
    return figure


def plan_figures(out: Path, plan: dict) -> dict[str, str]:
    """The plan's evidence (``Plan.to_json()``) drawn into ``out`` - the probe by depth, and each
    checked candidate's out-of-fold accuracy - as base64 PNGs by caption, for a report."""
    cuts = [CutEvidence(**e) for e in plan["evidence"]]
    images = {}
    if cuts:
        figure = plot_depth_evidence([c.cut for c in cuts], [c.probe_accuracy for c in cuts], [c.probe_stderr for c in cuts],
                                     [c.random_probe_accuracy for c in cuts], plan["cut"])  # fmt: skip
        images["Your images, depth by depth: the probe on pretrained and on random weights"] = save_figure(
            figure, out / "depth.png")  # fmt: skip
    rows = plan.get("crossfit", {}).get("candidates")
    if rows:
        figure = plot_checked(list(rows), [r["accuracy"] for r in rows.values()], [r["interval"] for r in rows.values()],
                              [r.get("forecast") for r in rows.values()], [r.get("weight") for r in rows.values()])  # fmt: skip
        images["Checked on your images: out-of-fold accuracy, forecast and weight"] = save_figure(figure, out / "checked.png")
    return images


def save_figure(figure, path: Path) -> str:
    """Save ``figure`` as PNG at ``path``; return it base64-encoded for embedding."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    path.write_bytes(buffer.getvalue())
    return base64.b64encode(buffer.getvalue()).decode()


def html_table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_format(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(
    path: Path,
    title: str,
    summary: dict,
    figures: dict[str, str],
    details: dict | None = None,
    tables: dict[str, tuple[list[str], list[list]]] | None = None,
) -> Path:
    """A single HTML file: a table of ``summary``, each base64 PNG in ``figures``, the ``tables``,
    then ``details`` as JSON."""
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_format(v))}</td></tr>" for k, v in summary.items()
    )
    images = "".join(
        f'<h2>{html.escape(caption)}</h2><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
        for caption, data in figures.items()
    )
    more = "".join(f"<h2>{html.escape(caption)}</h2>{html_table(*table)}" for caption, table in (tables or {}).items())
    extra = f"<h2>Details</h2><pre>{html.escape(json.dumps(details, indent=2))}</pre>" if details else ""
    path.write_text(
        f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:4px 10px;text-align:left}}
img{{max-width:100%}}</style></head><body><h1>{html.escape(title)}</h1><table>{rows}</table>{images}{more}{extra}
</body></html>""",
        encoding="utf-8",
    )
    return path


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)
