"""The public API's train() on small data: outputs agree with the saved model run on images."""

import json

import pytest
import torch

import transferlab as tl
from transferlab.features import compute_outputs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from conftest import write_folder

    root = tmp_path_factory.mktemp("api")
    data = write_folder(root / "colours", per_class=10)
    config = tl.TrainConfig(data=str(data), out=str(root / "run"), resolution=48, epochs=10, lr=0.01,
                            val_fraction=0.3, cache_dir=str(root / "cache"))  # fmt: skip
    return root, config, tl.train(config)


def test_saved_model_on_images_agrees_with_cached_feature_metrics(run):
    root, config, metrics = run
    model, info = tl.load_bundle(root / "run" / "model")
    splits = tl.split_dataset(tl.load_dataset(config.data), config.val_fraction, seed=config.seed)
    logits = compute_outputs(model, splits.val, info.preprocessing.resolution).values
    accuracy = float((logits.argmax(1) == splits.val.labels).mean())
    assert accuracy == pytest.approx(metrics["val_accuracy"], abs=1e-6)
    loss = torch.nn.functional.cross_entropy(torch.as_tensor(logits), torch.as_tensor(splits.val.labels)).item()
    assert loss == pytest.approx(metrics["val_loss"], rel=1e-4)


def test_second_run_hits_the_cache_with_identical_results(run):
    root, config, first = run
    again = tl.train(config)
    assert first["feature_cache"] == "miss" and again["feature_cache"] == "hit"
    assert again["val_accuracy"] == first["val_accuracy"] and again["history"] == first["history"]
    assert json.loads((root / "run" / "metrics.json").read_text())["feature_cache"] == "hit"


def test_truncate_trains_a_head_on_an_early_stage(run, tmp_path):
    _, config, _ = run
    import dataclasses

    metrics = tl.train(dataclasses.replace(config, strategy="truncate", cut="blocks.2", out=str(tmp_path / "t")))
    model, info = tl.load_bundle(tmp_path / "t" / "model")
    assert metrics["cut"] == "blocks.2" and info.num_features == 40
    assert sum(p.numel() for p in model.parameters()) < 100_000


def test_config_validation():
    with pytest.raises(tl.ConfigError, match="must be one of head, truncate. Got 'fine-tune'"):
        tl.TrainConfig(data="x", strategy="fine-tune")
    with pytest.raises(tl.ConfigError, match="truncate"):
        tl.TrainConfig(data="x", strategy="head", cut="blocks.2")
    with pytest.raises(tl.ConfigError, match="resolution"):
        tl.TrainConfig(data="x", resolution=4)
    with pytest.raises(tl.ConfigError, match="init"):
        tl.TrainConfig(data="x", head_init="nope")
