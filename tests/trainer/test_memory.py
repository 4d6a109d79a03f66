"""The memory budget of whole-network training: the batch arithmetic, and accumulation that trains
the same model as one big batch."""

import pytest
import torch

from transferlab.errors import ConfigError
from transferlab.heads import make_head
from transferlab.sources import build_backbone
from transferlab.surgery import TransferModel, body_at
from transferlab.trainer.loops import NetworkTraining, fit_network, layer_groups
from transferlab.trainer.memory import GIB, GPU_SHARE, BatchPlan, activation_bytes_per_image, plan_batches, plan_for


def test_batch_arithmetic():
    mb = 2**20
    assert plan_batches(4 * GIB, GIB - 56 * mb, 56 * mb, 41 * mb, 64) == BatchPlan(64, 1)  # 64 x 41 MB fit in 3 GB
    assert plan_batches(2 * GIB, GIB - 56 * mb, 56 * mb, 41 * mb, 64) == BatchPlan(22, 3)  # 24 fit: 22, 21, 21
    assert plan_batches(int(1.05 * GIB), GIB - 56 * mb, 56 * mb, 41 * mb, 64) == BatchPlan(1, 64)
    with pytest.raises(ConfigError, match="max_memory must leave room for at least one image"):
        plan_batches(GIB, 0, GIB, mb, 64)  # training's own state alone fills the budget


def test_memory_held_before_training_beyond_the_budget_bounds_what_training_adds_and_says_so(caplog):
    """A study's later runs at 224 px: 4.1 GB resident from earlier runs (freed, kept by the allocator)
    left no room for one image under the default 4 GB, and the study stopped half-way."""
    mb = 2**20
    with caplog.at_level("WARNING", logger="transferlab.trainer.memory"):
        plan = plan_batches(4 * GIB, int(4.1 * GIB), 56 * mb, 80 * mb, 64)
    assert plan == BatchPlan(32, 2)  # 50 images of 80 MB fit in 4 GB - 56 MB: two passes of 32
    assert "bounds what training adds" in caplog.text


def test_activation_estimate_grows_with_the_image_area():
    backbone = build_backbone("cnn-small", pretrained=False)
    small, large = (activation_bytes_per_image(backbone.model, r) for r in (28, 56))
    assert large == pytest.approx(4 * small, rel=0.05)
    assert plan_for(backbone.model, 28, 64, None) == BatchPlan(64, 1)


def test_on_a_gpu_its_free_memory_bounds_the_micro_batch_not_the_resident_memory(monkeypatch):
    """Activations live on the GPU there: the process's resident memory (the CUDA context alone is
    gigabytes) says nothing of them, and a GPU's own memory bounds them even without max_memory."""
    backbone = build_backbone("cnn-small", pretrained=False)
    per_image = activation_bytes_per_image(backbone.model, 28)
    state = 3 * sum(p.numel() * p.element_size() for p in backbone.model.parameters())
    free = (state + 10.5 * per_image) / GPU_SHARE  # room for 10 images
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(free) + 1, 80 * GIB))
    for budget in (4.0, None):
        assert plan_for(backbone.model, 28, 64, budget, "cuda:0") == BatchPlan(10, 7)  # 64 as 7 passes of <= 10


def _model():
    torch.manual_seed(0)
    backbone = build_backbone("cnn-small", pretrained=False)
    return TransferModel(body_at(backbone), make_head(backbone.num_features, 3), backbone.preprocessing)


def test_accumulated_micro_batches_train_the_same_model_as_whole_batches():
    generator = torch.Generator().manual_seed(0)
    y = torch.arange(48) % 3
    pixels = (torch.rand(48, 3, 16, 16, generator=generator) * 60).to(torch.uint8)
    pixels[y == 0, 0] += 150
    runs = {}
    for micro in (0, 5):  # 16 per step as one pass, or as passes of 5, 5, 5, 1
        model = _model()
        settings = NetworkTraining(epochs=3, lr=3e-3, batch_size=16, patience=10, freeze_bn=True, micro_batch=micro)
        runs[micro] = (fit_network(model, layer_groups(model, settings), pixels, y, pixels[:12], y[:12], settings),
                       model.head.fc.weight.detach().clone())  # fmt: skip
    for whole, accumulated in zip(runs[0][0], runs[5][0]):
        assert accumulated["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-4)
        assert accumulated["val_loss"] == pytest.approx(whole["val_loss"], rel=1e-4)
    assert torch.allclose(runs[0][1], runs[5][1], atol=1e-5)
