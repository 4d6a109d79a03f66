import onnx
import pytest
import torch
from timm.layers.conv2d_same import Conv2dSame
from torch import nn

from transferlab.engines import StaticSamePadding, onnx_runner, with_static_padding


def strided_same_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(Conv2dSame(3, 4, 3, stride=2), nn.ReLU6(), Conv2dSame(4, 4, 5, stride=2, groups=4)).eval()


@pytest.mark.parametrize("size", [15, 16, 33])
def test_static_padding_computes_what_dynamic_same_padding_does(size):
    net, images = strided_same_net(), torch.rand(3, 3, size, size)
    fixed = with_static_padding(net, images)
    assert all(isinstance(fixed[i], StaticSamePadding) for i in (0, 2)) and isinstance(net[0], Conv2dSame)
    with torch.no_grad():
        assert torch.equal(fixed(images), net(images))


def test_a_model_without_same_padding_is_returned_as_it_is():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1))
    assert with_static_padding(net, torch.rand(1, 3, 8, 8)) is net


def test_export_has_no_shape_arithmetic_and_agrees_with_pytorch(tmp_path):
    net = strided_same_net()
    runner = onnx_runner(net, 20, tmp_path / "net.onnx")
    ops = {node.op_type for node in onnx.load(str(tmp_path / "net.onnx")).graph.node}
    assert not ops & {"Shape", "Ceil", "Gather", "Pad"}, ops  # the paddings are the convolutions' own
    images = torch.rand(19, 3, 20, 20)  # more than one of ONNX Runtime's batches
    with torch.no_grad():
        assert torch.allclose(runner(images), net(images), atol=1e-5)


def test_onnx_runner_converts_pixels_as_pytorch_does(tmp_path):
    from transferlab.features import predict_pixels, to_unit_float

    runner = onnx_runner(strided_same_net(), 20, tmp_path / "net.onnx")
    pixels = (torch.rand(11, 3, 20, 20) * 255).to(torch.uint8)
    assert torch.equal(predict_pixels(runner, pixels, batch_size=4), runner(to_unit_float(pixels)))
    assert runner.run_pixels(pixels[:0]).numel() == 0


def test_fixing_the_padding_leaves_the_callers_model_untouched():
    net = nn.Sequential(Conv2dSame(3, 4, 3, stride=2), nn.BatchNorm2d(4)).train()
    before = net[1].running_mean.clone()
    with_static_padding(net, torch.rand(2, 3, 16, 16) + 5)
    assert torch.equal(net[1].running_mean, before) and isinstance(net[0], Conv2dSame)


def test_onnx_runtimes_threads_sleep_between_runs_instead_of_spinning(tmp_path):
    runner = onnx_runner(strided_same_net(), 20, tmp_path / "net.onnx")
    options = runner.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
