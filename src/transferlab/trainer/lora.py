"""LoRA for fine-tuning convolutional bodies (Hu et al., "LoRA: Low-Rank Adaptation of Large
Language Models", ICLR 2022), through the ``peft`` library, which supports Conv2d: every full
(non-depthwise) convolution gets a trainable low-rank update beside its frozen weight; after
training the updates are merged into the weights, so the saved model is the plain architecture.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError


def _peft():
    try:
        import peft
        from peft.tuners.lora import LoraLayer
    except ImportError as error:
        raise ConfigError("--tune lora needs the peft package: pip install 'transferlab[lora]'.") from error
    return peft, LoraLayer


def add_lora(body: nn.Module, rank: int) -> nn.Module:
    """Inject rank-``rank`` LoRA adapters (alpha = 2 x rank) into every non-depthwise Conv2d of ``body``."""
    peft, _ = _peft()
    targets = [name for name, m in body.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1]
    if not targets:
        raise ConfigError(f"--tune lora found no full convolution in {type(body).__name__} to adapt.")
    config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets)
    return peft.inject_adapter_in_model(config, body)


def merge_lora(body: nn.Module) -> nn.Module:
    """Merge every LoRA update into its convolution and put the plain convolution back."""
    _, lora_layer = _peft()
    for name, module in list(body.named_modules()):
        if isinstance(module, lora_layer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(body.get_submodule(parent_name) if parent_name else body, child, module.get_base_layer())
    return body
