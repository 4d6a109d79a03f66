"""The contract every strategy of the table keeps (like timm's tests over ``list_models()``): it
trains on a tiny set, saves, reloads and predicts what the run measured, exports to ONNX with
parity, and resumes after an interruption to the result of an uninterrupted run. A throw-away
strategy, registered here with a training stage of its own, goes through the same path: adding
a strategy is one table entry plus its training code, no edit anywhere else."""

import dataclasses

import numpy as np
import pytest
import torch

import transferlab as tl
from transferlab.strategies import STRATEGIES, Strategy
from transferlab.trainer import loops, stages
from transferlab.trainer.stages import STAGES, RunContext, Stage, cached_splits, readable_rows


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from conftest import split_folders

    return split_folders(tmp_path_factory.mktemp("contract"), 10, 7)


def _config(root, strategy: str, out: str) -> tl.TrainConfig:
    body = {"epochs": 2, "probe_epochs": 5} if "probe_epochs" in STRATEGIES[strategy].options else {"epochs": 5}
    return tl.TrainConfig(data=str(root / "d"), strategy=strategy, out=str(root / out), resolution=32, val_fraction=0.3,
                          batch_size=8, cache_dir=str(root / "cache"), **body)  # fmt: skip


class Interrupted(Exception):
    pass


def _interrupt_first(monkeypatch, module, name):
    """Raise in the first call of ``module.name`` after it ran (a checkpoint written, a head fitted)."""
    real = getattr(module, name)

    def once(*args, **kwargs):
        real(*args, **kwargs)
        monkeypatch.setattr(module, name, real)
        raise Interrupted

    monkeypatch.setattr(module, name, once)


@pytest.mark.parametrize("strategy", list(STRATEGIES))  # every entry of the table, a new one included
def test_every_strategy_trains_saves_reloads_exports_and_resumes(strategy, data, monkeypatch):
    metrics = tl.train(_config(data, strategy, f"{strategy}-whole")).metrics
    assert metrics["strategy"] == strategy and metrics["num_test"] == 12

    model = tl.load(data / f"{strategy}-whole" / "model")
    again = model.evaluate(str(data / "d" / "test"))
    assert again["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)  # float32 against float64
    assert again["confusion_matrix"] == metrics["confusion_matrix"]
    path = model.export("onnx")
    assert path.exists()

    if STRATEGIES[strategy].trains_body:  # killed after the first epoch's checkpoint
        _interrupt_first(monkeypatch, loops, "_save_checkpoint")
    else:  # killed after the head was fitted (trained, or computed in closed form), before any output
        _interrupt_first(monkeypatch, stages, "fit_head")
        _interrupt_first(monkeypatch, stages, "fit_ridge_head")
    config = _config(data, strategy, f"{strategy}-interrupted")
    with pytest.raises(Interrupted):
        tl.train(config)
    resumed = tl.train(dataclasses.replace(config, resume=True)).metrics
    assert resumed["history"] == metrics["history"] and resumed["test_accuracy"] == metrics["test_accuracy"]


def _class_means(model, prepared, cut, config, context: RunContext) -> Stage:
    """A head that is the nearest class mean of the frozen features (its own training code)."""
    extractor = torch.nn.Sequential(model.normalize, model.body)
    parts = {"weights": prepared.weights_digest, "cut": cut, "resolution": model.preprocessing.resolution}
    inputs, hits = cached_splits(extractor, parts, prepared, model.preprocessing.resolution, config, "features")
    rows = readable_rows(inputs, prepared)
    x, y = (torch.from_numpy(np.asarray(a)) for a in rows["train"])
    means = torch.stack([x[y == c].mean(0) for c in range(len(prepared.classes))])
    with torch.no_grad():  # argmax of -|x - m|^2 / 2 = x.m - |m|^2 / 2
        model.head.fc.weight.copy_(means)
        model.head.fc.bias.copy_(-0.5 * means.square().sum(1))
        logits = {split: model.head(torch.from_numpy(np.asarray(v))) for split, (v, _) in rows.items()}
    labels = {split: np.asarray(labels) for split, (_, labels) in rows.items()}
    val_loss = torch.nn.functional.cross_entropy(logits["val"], torch.from_numpy(labels["val"])).item()
    val_accuracy = float((logits["val"].argmax(1).numpy() == labels["val"]).mean())
    history = [{"epoch": 1, "train_loss": 0.0, "train_accuracy": 1.0, "val_loss": val_loss, "val_accuracy": val_accuracy,
                "lr": 0.0}]  # fmt: skip
    return Stage(inputs, labels, logits, history, {"class_means_seconds": 0.0}, hits)


def test_a_new_strategy_is_one_table_entry_plus_its_training_code(data, monkeypatch):
    monkeypatch.setitem(STAGES, "class-means", _class_means)
    monkeypatch.setitem(STRATEGIES, "class-means", Strategy(
        "class-means", "frozen body, the nearest class mean as the head", epochs=1, lr=1.0, stages=("class-means",),
        trains="nothing: the head is computed",
    ))  # fmt: skip
    config = tl.TrainConfig(data=str(data / "d"), strategy="class-means", out=str(data / "means"), resolution=32,
                            val_fraction=0.3, cache_dir=str(data / "cache"))  # fmt: skip
    metrics = tl.train(config).metrics
    assert metrics["strategy"] == "class-means" and metrics["test_accuracy"] >= 0.9  # three colours: an easy task
    model = tl.load(data / "means" / "model")
    assert model.evaluate(str(data / "d" / "test"))["accuracy"] == pytest.approx(metrics["test_accuracy"])
    with pytest.raises(tl.ConfigError, match="--tune applies to finetune, ensemble, not to --strategy class-means"):
        tl.TrainConfig(data="x", strategy="class-means", tune="bias")


def test_multicut_weighs_every_tap_the_same_and_reads_every_cut(data):
    from transferlab.bundle import load_bundle
    from transferlab.signals import tap_standardization

    rng = np.random.default_rng(0)
    base = rng.normal(size=(50, 16 + 1280))
    base = (base - base.mean(0)) / base.std(0, ddof=1)  # every column deviates exactly 1
    features = np.hstack([5 + 0.01 * base[:, :16], 30 * base[:, 16:]])  # a narrow tap of small values, a wide one
    mean, scale = tap_standardization(features, [16, 1280])
    standardized = (features.astype(np.float32) - mean) / scale
    block_variance = [float(standardized[:, :16].var(0, ddof=1).sum()), float(standardized[:, 16:].var(0, ddof=1).sum())]
    assert block_variance == pytest.approx([1.0, 1.0], rel=1e-3)  # each tap weighs one, whatever its width and scale

    config = tl.TrainConfig(data=str(data / "d"), strategy="multicut", out=str(data / "multicut"), resolution=32,
                            val_fraction=0.3, cache_dir=str(data / "cache"))  # fmt: skip
    metrics = tl.train(config).metrics
    _, info = load_bundle(data / "multicut" / "model")
    backbone = tl.build_backbone("efficientnet_lite0")
    assert [t.cut for t in info.taps] == [c.name for c in backbone.cut_points] and metrics["cut"] == "all"
    assert info.num_features == sum(c.channels for c in backbone.cut_points) and metrics["test_accuracy"] >= 0.9


def test_the_multicut_head_finds_the_one_narrow_tap_that_carries_the_signal():
    """Of two taps, only the narrow early one tells the classes apart, the wide late one is noise:
    the head (each tap standardized, ridge at the leave-one-out strength) classifies unseen samples
    by it, and its softmax is tempered on validation."""
    from transferlab.heads import LinearHead
    from transferlab.trainer.loops import HeadTraining
    from transferlab.trainer.stages import head_fitter

    rng = np.random.default_rng(0)

    def sample(per_class: int):
        labels = np.repeat(np.arange(4), per_class)
        early = rng.normal(size=(len(labels), 16)) + 3 * np.eye(4, 16)[labels]  # the signal, in 16 features
        late = 10 * rng.normal(size=(len(labels), 1280))  # 1,280 features of noise
        return np.hstack([early, late]).astype(np.float32), labels

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = sample(8), sample(8), sample(100)
    head = LinearHead(16 + 1280, 4)
    settings = HeadTraining(epochs=1, lr=1e-3, batch_size=8, weight_decay=0.0, seed=0)
    history = head_fitter(val_x, val_y, settings, None, [16, 1280])(head, train_x, train_y)
    assert len(history) == 1 and history[0]["penalty"] > 0 and 0.01 <= history[0]["temperature"] <= 100
    with torch.no_grad():
        logits = head(torch.from_numpy(test_x))  # raw features: the standardization is folded in
    assert (logits.argmax(1).numpy() == test_y).mean() >= 0.85  # 0.90 measured; chance is 0.25
    assert torch.allclose(torch.softmax(logits, 1).sum(1), torch.ones(len(test_y)))
