import pytest
import torch

from transferlab.errors import BackboneError
from transferlab.heads import make_head
from transferlab.sources import build_backbone
from transferlab.surgery import TransferModel, body_at, freeze


@pytest.fixture(scope="module")
def lite0():
    return build_backbone("efficientnet_lite0")


def _running_stats(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def test_frozen_body_batchnorm_statistics_do_not_move_in_train_mode(lite0):
    model = TransferModel(freeze(body_at(lite0)), make_head(1280, 3), lite0.preprocessing)
    before = _running_stats(model)
    model.train()
    assert model.head.training and not model.body.bn1.training
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        loss = model(torch.rand(4, 3, 64, 64)).logsumexp(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = _running_stats(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in model.body.parameters())
    assert model.head.fc.weight.grad is not None


def test_unfrozen_batchnorm_trains_normally(lite0):
    model = TransferModel(body_at(build_backbone("efficientnet_lite0")), make_head(1280, 3), lite0.preprocessing)
    model.train()
    before = model.body.bn1.running_mean.clone()
    model(torch.rand(4, 3, 64, 64))
    assert not torch.equal(before, model.body.bn1.running_mean)


def test_cut_at_stage_gives_pooled_features_and_leaves_backbone_whole(lite0):
    body = body_at(lite0, "blocks.2")
    with torch.no_grad():
        assert body(torch.rand(2, 3, 64, 64)).shape == (2, 40)
    assert sum(p.numel() for p in body.parameters()) < sum(p.numel() for p in lite0.model.parameters()) / 10
    assert len(lite0.model.blocks) == 7


def test_unknown_cut_lists_cut_points(lite0):
    with pytest.raises(BackboneError, match="no cut point 'blocks.9'.*blocks.0"):
        body_at(lite0, "blocks.9")
