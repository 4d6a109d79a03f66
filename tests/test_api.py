"""The public API's jobs from Python: auto prepares once, pretrain, the result object; the old module name warns."""

import pytest

import transferlab as tl
from transferlab import sources
from transferlab.backbones import Backbone
from transferlab.datasets import catalog


@pytest.fixture
def counted(monkeypatch):
    """Counts of data loads, backbone resolutions and weight hashes (by weights source)."""
    counts = {"loads": 0, "builds": [], "hashed": []}
    load, route, fingerprint = catalog.load_image_folder, sources.route, Backbone.weights_fingerprint

    def counting_load(*args, **kwargs):
        counts["loads"] += 1
        return load(*args, **kwargs)

    def counting_route(name):
        counts["builds"].append(name)
        return route(name)

    def counting_fingerprint(self):
        counts["hashed"].append(self.weights_source)
        return fingerprint(self)

    monkeypatch.setattr(catalog, "load_image_folder", counting_load)
    monkeypatch.setattr(sources, "route", counting_route)
    monkeypatch.setattr(Backbone, "weights_fingerprint", counting_fingerprint)
    return counts


def test_auto_loads_the_data_and_builds_the_backbone_once(image_folder, tmp_path, counted):
    result = tl.train(str(image_folder), strategy="auto", resolution=32, epochs=3,
                      out=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"))  # fmt: skip
    companions = tl.TrainConfig(data="x").resolved_companions()  # the check's multicut on the other offline backbones
    assert counted["loads"] == 1 and sorted(counted["builds"]) == sorted(["efficientnet_lite0", *companions])
    pretrained = [source for source in counted["hashed"] if source != "random init"]
    assert len(pretrained) == 1 + len(companions), counted["hashed"]  # the random twin is hashed once, for its own entry
    assert result.plan is not None and result.metrics["strategy"] == result.plan.strategy
    assert result.metrics["plan"]["evidence"][0]["cut"] == "blocks.0"


def test_pretrain_from_python_gives_a_backbone_to_transfer_from(image_folder, tmp_path):
    source = tl.pretrain(str(image_folder), "cnn-small", str(tmp_path / "src"), epochs=1, resolution=28, classes="0-1",
                         cache_dir=str(tmp_path / "cache"))  # fmt: skip
    assert source.metrics["strategy"] == "scratch" and source.metrics["config"]["batch_size"] == 128
    assert source.model.classes == ("blue", "green")
    backbone = tl.build_backbone(str(source.out / "model"))
    assert backbone.arch == "transferlab:cnn-small"


def test_a_config_object_and_options_are_the_same_run(image_folder, tmp_path):
    config = tl.TrainConfig(data=str(image_folder), strategy="head", resolution=32, holdout=True, cache_dir=str(tmp_path / "c"))
    by_config = tl.train(config, out=str(tmp_path / "a")).metrics
    by_options = tl.train(str(image_folder), strategy="head", resolution=32, holdout=True, cache_dir=str(tmp_path / "c"),
                          out=str(tmp_path / "b")).metrics  # fmt: skip
    assert by_config["history"] == by_options["history"]


def test_the_old_module_name_still_imports_with_a_deprecation_warning():
    import importlib
    import sys

    sys.modules.pop("transferlab.jobs", None)
    with pytest.warns(DeprecationWarning, match="transferlab.jobs is now transferlab.api"):
        jobs = importlib.import_module("transferlab.jobs")
    assert jobs.train is tl.train and jobs.advise is tl.advise
