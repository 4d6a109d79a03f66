"""The contract every strategy of the table keeps, checked by the public
:func:`transferlab.testing.check_strategy` (like scikit-learn's ``check_estimator``) through the
real command line: it trains on a tiny set, saves, reloads and predicts what the run measured,
exports to ONNX with parity, resumes after an interruption to the result of an uninterrupted run,
and shows up in the CLI's choices, its help, the forecast and the study. A throw-away strategy,
registered here with a training stage of its own, passes the same check: adding a strategy is one
table entry plus its training code, no edit anywhere else."""

import numpy as np
import pytest
import torch

import transferlab as tl
from transferlab.strategies import STRATEGIES, Strategy
from transferlab.testing import StrategyContractError, check_strategy
from transferlab.trainer.context import RunContext, Stage
from transferlab.trainer.extraction import cached_splits, readable_rows
from transferlab.trainer.stages import STAGES


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from conftest import split_folders

    return split_folders(tmp_path_factory.mktemp("contract"), 10, 7)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One folder for every check: the tiny data set and its feature cache are made once."""
    return tmp_path_factory.mktemp("check")


@pytest.mark.parametrize("strategy", list(STRATEGIES))  # every entry of the table
def test_every_strategy_keeps_the_contract(strategy, workdir):
    metrics = check_strategy(strategy, workdir)
    assert metrics["strategy"] == strategy and metrics["test_accuracy"] >= 0.5  # three colours; chance is 0.33


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


CLASS_MEANS = Strategy("class-means", "frozen body, the nearest class mean as the head", epochs=1, lr=1.0,
                       stages=("class-means",), trains="nothing: the head is computed",
                       anchor="probe_final")  # forecast from the final probe, so the forecast and the study take it too


def test_a_new_strategy_is_one_table_entry_plus_its_training_code(workdir, monkeypatch):
    monkeypatch.setitem(STAGES, "class-means", _class_means)
    monkeypatch.setitem(STRATEGIES, "class-means", CLASS_MEANS)
    metrics = check_strategy(CLASS_MEANS, workdir)  # trains, reloads, exports, resumes, in the CLI's help
    assert metrics["strategy"] == "class-means" and metrics["test_accuracy"] >= 0.9  # three colours: an easy task
    with pytest.raises(tl.ConfigError, match="--tune applies to finetune, ensemble, not to --strategy class-means"):
        tl.TrainConfig(data="x", strategy="class-means", tune="bias")


def test_the_check_names_the_part_a_strategy_breaks(workdir, monkeypatch):
    unregistered_stage = Strategy("no-stage", "a stage nobody registered", epochs=1, lr=1.0, stages=("nowhere",),
                                  trains="nothing")  # fmt: skip
    monkeypatch.setitem(STRATEGIES, "no-stage", unregistered_stage)
    with pytest.raises(StrategyContractError, match="'no-stage', stages: no training stage is named 'nowhere'"):
        check_strategy(unregistered_stage, workdir)
    with pytest.raises(StrategyContractError, match="not registered"):
        check_strategy(Strategy("elsewhere", "x", 1, 1.0, ("head",), "the head"), workdir)

    def shuffled(*args) -> Stage:  # reports logits its saved head does not give
        stage = _class_means(*args)
        stage.logits = {split: logits.roll(1, dims=1) for split, logits in stage.logits.items()}
        return stage

    monkeypatch.setitem(STAGES, "shuffled", shuffled)
    liar = Strategy("liar", "measures one model, saves another", epochs=1, lr=1.0, stages=("shuffled",), trains="nothing")
    monkeypatch.setitem(STRATEGIES, "liar", liar)
    with pytest.raises(StrategyContractError, match="'liar', reload: the saved model scores "):
        check_strategy(liar, workdir)


def test_multicut_weighs_every_tap_the_same_and_reads_every_cut(data):
    from transferlab.bundle import load_bundle
    from transferlab.transferability import tap_standardization

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
    assert metrics["validation"] == "fitted too, scored leave-one-out"  # its head chooses nothing on them
    held = tl.train(tl.TrainConfig(**{**config.__dict__, "out": str(data / "multicut-holdout"), "holdout": True})).metrics
    assert "validation" not in held and held["resolved_config"]["holdout"]
    fitted, held_out = (load_bundle(data / name / "model")[0].head.fc.weight for name in ("multicut", "multicut-holdout"))
    assert fitted.shape == held_out.shape and not torch.allclose(fitted, held_out)  # fitted on more images


def test_the_multicut_head_finds_the_one_narrow_tap_that_carries_the_signal():
    """Of two taps, only the narrow early one tells the classes apart, the wide late one is noise:
    the head (each tap standardized, ridge at the leave-one-out strength) classifies unseen samples
    by it, and its softmax is tempered on leave-one-out scores (8 validation images a class are too few)."""
    from transferlab.heads import LinearHead
    from transferlab.trainer.frozen import head_fitter

    rng = np.random.default_rng(0)

    def sample(per_class: int):
        labels = np.repeat(np.arange(4), per_class)
        early = rng.normal(size=(len(labels), 16)) + 3 * np.eye(4, 16)[labels]  # the signal, in 16 features
        late = 10 * rng.normal(size=(len(labels), 1280))  # 1,280 features of noise
        return np.hstack([early, late]).astype(np.float32), labels

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = sample(8), sample(8), sample(100)
    head = LinearHead(16 + 1280, 4)
    history = head_fitter(val_x, val_y, "none", None, [16, 1280])[0](head, train_x, train_y)
    assert len(history) == 1 and history[0]["penalty"] > 0 and 0.01 <= history[0]["temperature"] <= 100
    with torch.no_grad():
        logits = head(torch.from_numpy(test_x))  # raw features: the standardization is folded in
    assert (logits.argmax(1).numpy() == test_y).mean() >= 0.85  # 0.90 measured; chance is 0.25
    assert torch.allclose(torch.softmax(logits, 1).sum(1), torch.ones(len(test_y)))
