"""A rewrite of an exported ONNX graph that ONNX Runtime does not make itself: zero padding folded
into the convolution it feeds.

PyTorch exports a fixed "same" padding (:class:`.engines.StaticSamePadding`, TensorFlow's
asymmetric padding of EfficientNet-Lite's stem and strided depthwise convolutions) as a ``Pad``
whose amounts come out of a chain of constant nodes (Constant, Transpose, Reshape, Cast). ONNX
Runtime 1.32 neither folds that chain nor fuses the ``Pad`` into the convolution: it copies the
whole feature map on every image, breaks ONNX Runtime's blocked memory layout on either side, and
in an int8 graph runs in float32 between a dequantize and a quantize. Profiled on the digits head
model at 112 px (AVX-512 VNNI, 2 cores): ``Pad`` 20% of float32's time and its layout reorders 15%;
``Pad`` 18% of int8's and the dequantize/quantize around it 19%. Zero padding before a convolution
is the convolution's own ``pads`` attribute (which ONNX allows asymmetric), so it is folded there:
outputs identical, float32 1.5x and int8 1.6x faster on that model (docs/speed.md).
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def _attribute(node, name: str, default=None):
    from onnx import helper

    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else helper.get_attribute_value(found)


def probe_session(model, tensors: list[str], element_type: int):
    """An ONNX Runtime session of a copy of ``model`` (an ``onnx.ModelProto``) whose only outputs are
    ``tensors`` (of ``element_type``, an ``onnx.TensorProto`` type); what they do not need is pruned."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(name, element_type, None) for name in tensors)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])


def constant_values(model, names: list[str]) -> dict[str, np.ndarray]:
    """The values of ``names``, tensors of ``model`` (an ``onnx.ModelProto``) that depend on no input,
    computed by ONNX Runtime (:func:`probe_session`; the inputs are fed zeros, each unknown dimension 1)."""
    import onnx

    session = probe_session(model, names, onnx.TensorProto.INT64)
    feeds = {}
    for given in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in given.shape]
        feeds[given.name] = np.zeros(shape, dtype=np.float32)
    return dict(zip(names, session.run(names, feeds)))


def _foldable(pad, consumers: dict[str, list]) -> bool:
    """Whether ``pad`` is a zero padding of height and width feeding only explicitly padded convolutions."""
    value_given = len(pad.input) > 2 and pad.input[2] != ""
    convs = consumers.get(pad.output[0], [])
    return (_attribute(pad, "mode", b"constant") == b"constant" and not value_given and bool(convs)
            and all(c.op_type == "Conv" and c.input[0] == pad.output[0]
                    and _attribute(c, "auto_pad", b"NOTSET") == b"NOTSET" for c in convs))  # fmt: skip


def fold_pads(model) -> int:
    """Fold every zero ``Pad`` of height and width in ``model`` (an ``onnx.ModelProto``, changed in
    place) into the ``pads`` of the convolutions it feeds, and drop the nodes left unused; returns
    how many were folded."""
    from onnx import helper

    graph = model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    pads = [node for node in graph.node if node.op_type == "Pad" and _foldable(node, consumers)]
    if not pads:
        return 0
    amounts = constant_values(model, [pad.input[1] for pad in pads])
    folded = set()
    for pad in pads:
        amount = amounts[pad.input[1]].tolist()  # N, C, H, W begins, then N, C, H, W ends
        if len(amount) != 8 or any(amount[i] for i in (0, 1, 4, 5)) or min(amount) < 0:
            continue
        for conv in consumers[pad.output[0]]:
            before = list(_attribute(conv, "pads", [0, 0, 0, 0]))
            after = [before[0] + amount[2], before[1] + amount[3], before[2] + amount[6], before[3] + amount[7]]
            kept = [a for a in conv.attribute if a.name != "pads"]
            del conv.attribute[:]
            conv.attribute.extend([*kept, helper.make_attribute("pads", after)])
            conv.input[0] = pad.input[0]
        folded.add(pad.output[0])  # a tensor has one producer: the node's name may be empty
    _drop_unused([node for node in graph.node if node.output[0] not in folded], graph)
    log.debug("folded %d Pad nodes into their convolutions", len(folded))
    return len(folded)


def _drop_unused(nodes: list, graph) -> None:
    """``graph``'s nodes become those of ``nodes`` (in graph order) that the graph's outputs need."""
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(nodes):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
