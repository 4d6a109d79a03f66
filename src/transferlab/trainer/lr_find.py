"""The learning-rate range test (Smith, "Cyclical Learning Rates for Training Neural Networks",
WACV 2017; fastai's ``lr_find``): one training step at each of exponentially growing rates,
the loss smoothed, stopped once it diverges; the suggestion is a tenth of the rate at the lowest
smoothed loss after the first :data:`SKIP_START` steps, whose average rests on a batch or a few
(fastai v1's ``Recorder.plot`` skips its first 10 points too): a head that starts near its best,
as LP-FT's computed probe does, makes the very first batch's loss the lowest by chance, and the
suggestion would fall below the range tested. Run on the fine-tuning set-up (the linear probe
first, as ``finetune`` does), and the weights are put back afterwards. The set-up is training's
own (``stages.setup_network``): what ``--tune`` trains is what the test moves, and a
``--regularizer`` penalty enters every step's loss.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from ..config import TrainConfig
from ..prepare import PreparedRun
from ..report import save_figure
from ..strategies import FINETUNING, STRATEGIES
from .context import RunContext
from .extraction import cached_splits, readable_rows
from .loops import accumulate_gradients, prepare_trainable
from .network import setup_network
from .stages import stage_function
from .train import build_model

START, END, STEPS = 1e-7, 10.0, 100
SMOOTHING, DIVERGENCE = 0.98, 4.0  # exponential moving average of the loss; stop above 4x its best
SKIP_START = 10  # steps whose smoothed loss the suggestion does not read


@dataclass(frozen=True)
class LrFinding:
    rates: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    suggestion: float


def lr_range(step: Callable[[float], float], start: float = START, end: float = END, steps: int = STEPS,
             smoothing: float = SMOOTHING, divergence: float = DIVERGENCE) -> LrFinding:  # fmt: skip
    """Call ``step(rate)`` (one training step, returning its loss) at ``steps`` rates from ``start``
    to ``end`` on a log scale; stop when the smoothed loss exceeds ``divergence`` times its best."""
    rates, losses, smoothed, average = [], [], [], 0.0
    for k in range(steps):
        rate = start * (end / start) ** (k / max(1, steps - 1))
        loss = step(rate)
        average = smoothing * average + (1 - smoothing) * loss
        rates.append(rate)
        losses.append(loss)
        smoothed.append(average / (1 - smoothing ** (k + 1)))  # bias-corrected
        if not math.isfinite(loss) or smoothed[-1] > divergence * min(smoothed):
            break
    read = range(SKIP_START, len(smoothed)) if len(smoothed) > SKIP_START else range(len(smoothed))
    best = min(read, key=smoothed.__getitem__)
    return LrFinding(tuple(rates), tuple(losses), tuple(smoothed), rates[best] / 10)


def plot_finding(finding: LrFinding):
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(finding.rates, finding.losses, alpha=0.3, label="loss")
    axis.plot(finding.rates, finding.smoothed, label="smoothed")
    axis.axvline(finding.suggestion, color="tab:red", linestyle="--", label=f"suggested {finding.suggestion:.1e}")
    axis.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="Learning-rate range test")
    axis.set_ylim(top=min(max(finding.smoothed) * 1.2, max(finding.losses)))
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return figure


def find_lr(prepared: PreparedRun, config: TrainConfig, out: Path) -> LrFinding:
    """The range test on ``prepared`` as ``config`` (a ``finetune`` run) would fine-tune it;
    ``lr-find.png`` and ``lr-find.json`` in ``out``."""
    torch.manual_seed(config.seed)
    model, cut = build_model(prepared, config)
    probe = STRATEGIES[FINETUNING].stages[0]  # LP-FT's linear probe
    stage_function(probe)(model, prepared, cut, config, RunContext(out, stage=probe))
    inputs, _ = cached_splits(None, {}, prepared, model.preprocessing.resolution, config, "decode", splits=("train",))
    pixels, labels = (torch.from_numpy(a) for a in readable_rows(inputs, prepared)["train"])
    settings, groups = setup_network(model, config)
    optimizer = torch.optim.AdamW(groups)
    saved = copy.deepcopy(model.state_dict())
    model.train().to(memory_format=torch.channels_last)
    model.freeze_bn = settings.freeze_bn
    anchors = prepare_trainable(model, groups, settings)
    order = iter(())

    def step(rate: float) -> float:
        nonlocal order
        batch = next(order, None)
        if batch is None:
            order = iter([b for b in torch.randperm(len(pixels)).split(config.batch_size) if len(b) > 1])  # BatchNorm
            batch = next(order)
        for group in optimizer.param_groups:
            group["lr"] = rate * group["lr_scale"]
        optimizer.zero_grad(set_to_none=True)
        loss, _ = accumulate_gradients(model, batch, pixels, labels, None, settings, anchors)
        optimizer.step()
        return loss

    finding = lr_range(step)
    model.load_state_dict(saved)
    out.mkdir(parents=True, exist_ok=True)
    save_figure(plot_finding(finding), out / "lr-find.png")
    (out / "lr-find.json").write_text(json.dumps(dataclasses.asdict(finding), indent=2))
    return finding
