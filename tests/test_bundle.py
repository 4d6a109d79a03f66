import json
from pathlib import Path

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


def test_a_bundle_records_the_taps_its_head_reads(saved):
    _, info, directory = saved
    meta = json.loads((directory / "bundle.json").read_text())
    assert meta["format_version"] == 2
    assert meta["taps"] == [{"cut": "blocks.1", "channels": 24, "pooling": "avg"}]


def test_a_head_over_several_cuts_saves_and_loads(tmp_path):
    from transferlab.bundle import Tap
    from transferlab.surgery import body_over

    backbone = build_backbone("efficientnet_lite0")
    taps = (Tap("blocks.1", 24), Tap("blocks.2", 40), Tap("final", 1280))
    body = body_over(backbone, [t.cut for t in taps])
    model = TransferModel(body, make_head(24 + 40 + 1280, 3), backbone.preprocessing).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert body(model.normalize(x)).shape == (2, 24 + 40 + 1280)
        single = body_at(backbone, "blocks.2").eval()(model.normalize(x))
        assert torch.allclose(body(model.normalize(x))[:, 24:64], single, atol=1e-5)  # each tap is its cut's features
    info = BundleInfo(("a", "b", "c"), backbone.preprocessing, "efficientnet_lite0", backbone.arch, "final",
                      tuple(backbone.cut_points), 1344, 0.0, "xavier-uniform", "multi", taps)  # fmt: skip
    loaded, loaded_info = load_bundle(save_bundle(tmp_path / "model", model, info))
    assert loaded_info.taps == taps
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x), atol=1e-6)


def test_a_bundle_of_the_previous_format_still_loads_and_predicts_the_same():
    """tests/fixtures/bundle-v1: saved by transferlab 0.2.0 (format 1: one cut, no taps) with the
    top-3 predictions it made then."""
    import numpy as np
    from conftest import COLOURS, make_image

    import transferlab as tl

    fixture = Path(__file__).parent / "fixtures" / "bundle-v1"
    expected = json.loads((fixture / "expected.json").read_text())["top"]
    assert json.loads((fixture / "bundle.json").read_text())["format_version"] == 1
    rng = np.random.default_rng(123)
    images = [np.asarray(make_image(colour, rng)) for colour in COLOURS.values()]
    predictions = tl.load(fixture).predict(images, top_k=3)
    for prediction, top in zip(predictions, expected):
        assert [label for label, _ in prediction.top] == [label for label, _ in top]
        assert [p for _, p in prediction.top] == pytest.approx([p for _, p in top], abs=1e-6)
