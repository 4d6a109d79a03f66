import json

import pytest
import safetensors.torch
import torch

from transferlab.bundle import BundleInfo, load_bundle, save_bundle
from transferlab.errors import BundleError
from transferlab.heads import make_head
from transferlab.sources import build_backbone
from transferlab.surgery import TransferModel, body_at


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    backbone = build_backbone("efficientnet_lite0")
    model = TransferModel(body_at(backbone, "blocks.1"), make_head(24, 3), backbone.preprocessing).eval()
    info = BundleInfo(("a", "b", "c"), backbone.preprocessing, "efficientnet_lite0", backbone.arch, "blocks.1",
                      tuple(backbone.cut_points), 24, 0.0, "xavier-uniform", "truncate")  # fmt: skip
    directory = save_bundle(tmp_path_factory.mktemp("bundle") / "model", model, info)
    return model, info, directory


def test_round_trip_gives_the_same_outputs(saved):
    model, info, directory = saved
    loaded, loaded_info = load_bundle(directory)
    assert loaded_info == info
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=1e-6)


def _copy(directory, tmp_path):
    target = tmp_path / "copy"
    target.mkdir()
    for f in directory.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    return target


def test_tampered_weights_are_refused(saved, tmp_path):
    target = _copy(saved[2], tmp_path)
    data = bytearray((target / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (target / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum"):
        load_bundle(target)


def test_tensors_not_matching_json_are_named(saved, tmp_path):
    target = _copy(saved[2], tmp_path)
    meta = json.loads((target / "bundle.json").read_text())
    meta["classes"] = ["a", "b"]  # head in the file has 3 outputs
    (target / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"head.fc.weight: \(3, 24\)"):
        load_bundle(target)


def test_missing_tensor_is_named(saved, tmp_path):
    import hashlib

    target = _copy(saved[2], tmp_path)
    tensors = safetensors.torch.load_file(target / "model.safetensors")
    del tensors["head.fc.bias"]
    safetensors.torch.save_file(tensors, target / "model.safetensors")
    meta = json.loads((target / "bundle.json").read_text())
    meta["weights_sha256"] = hashlib.sha256((target / "model.safetensors").read_bytes()).hexdigest()
    (target / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="missing head.fc.bias"):
        load_bundle(target)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="bundle.json is missing"):
        load_bundle(tmp_path)
