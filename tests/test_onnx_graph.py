import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transferlab.engines import OnnxRunner, write_onnx
from transferlab.onnx_graph import fold_pads


class Padded(nn.Module):
    """A convolution after an asymmetric padding of ``mode``, then a max-pool after a zero padding."""

    def __init__(self, mode: str):
        super().__init__()
        torch.manual_seed(0)
        self.mode, self.conv = mode, nn.Conv2d(3, 4, 3, stride=2)

    def forward(self, x):
        x = self.conv(F.pad(x, (0, 1, 1, 2), mode=self.mode))
        return F.max_pool2d(F.pad(x, (1, 1, 1, 1)), 2)


def exported_ops(path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("size", [15, 16])
def test_a_zero_padding_becomes_the_convolutions_own_and_the_outputs_do_not_move(tmp_path, size):
    net, images = Padded("constant").eval(), torch.rand(5, 3, size, size)
    write_onnx(net, images, tmp_path / "net.onnx")
    ops = exported_ops(tmp_path / "net.onnx")
    assert ops.count("Pad") == 1 and ops.index("Conv") < ops.index("Pad")  # the max-pool's padding stays
    conv = next(node for node in onnx.load(str(tmp_path / "net.onnx")).graph.node if node.op_type == "Conv")
    assert list(next(a for a in conv.attribute if a.name == "pads").ints) == [1, 0, 2, 1]  # top, left, bottom, right
    with torch.no_grad():
        assert torch.allclose(OnnxRunner(tmp_path / "net.onnx")(images), net(images), atol=1e-6)


def test_a_padding_that_is_not_zeros_stays_a_pad(tmp_path):
    net, images = Padded("reflect").eval(), torch.rand(2, 3, 16, 16)
    write_onnx(net, images, tmp_path / "net.onnx")
    assert exported_ops(tmp_path / "net.onnx").count("Pad") == 2
    assert fold_pads(onnx.load(str(tmp_path / "net.onnx"))) == 0
    with torch.no_grad():
        assert np.allclose(OnnxRunner(tmp_path / "net.onnx")(images).numpy(), net(images).numpy(), atol=1e-6)
