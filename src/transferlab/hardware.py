"""What this machine's CPU offers the engines, read as the compute kernels read it (cpuid, through
PyTorch's cpuinfo), and the int8 format that keeps its accuracy there.

ONNX Runtime's x86 int8 kernels multiply uint8 activations by int8 weights (U8S8). With AVX-512
VNNI (or AMX) one instruction does it exactly; without VNNI the AVX2 and AVX-512 kernels use
VPMADDUBSW, whose 16-bit intermediate sums can saturate - ONNX Runtime's quantization guide names
the remedy, 7-bit weights (``reduce_range``). Measured both ways in docs/speed.md.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class Cpu:
    """The instruction sets that decide which kernels run."""

    avx2: bool
    avx512: bool
    vnni: bool  # AVX-512 VNNI: exact uint8 x int8 dot products
    avx512_bf16: bool
    amx: bool

    @property
    def kind(self) -> str:
        """In words, as docs/speed.md names the machine kinds."""
        if self.vnni or self.amx:
            return "AVX-512 with VNNI" + (" and AMX" if self.amx else "")
        if self.avx512:
            return "AVX-512 without VNNI"
        return "AVX2 only (no VNNI)" if self.avx2 else "without AVX2"

    @property
    def exact_int8(self) -> bool:
        """Whether uint8 x int8 products run without saturating intermediate sums."""
        return self.vnni or self.amx

    @property
    def native_bf16(self) -> bool:
        return self.avx512_bf16 or self.amx


@functools.cache
def this_cpu() -> Cpu:
    """This machine's CPU (cpuid through PyTorch's cpuinfo: what an emulator reports, the kernels see too)."""
    import torch

    return Cpu(avx2=torch.cpu._is_avx2_supported(), avx512=torch.cpu._is_avx512_supported(),
               vnni=torch.cpu._is_vnni_supported(), avx512_bf16=torch.cpu._is_avx512_bf16_supported(),
               amx=torch.cpu._is_amx_tile_supported())  # fmt: skip


@dataclass(frozen=True)
class Int8Format:
    """How weights and activations are quantized for ONNX Runtime."""

    name: str
    reduce_range: bool  # 7-bit weights: no saturation in VPMADDUBSW's 16-bit sums
    why: str


EXACT = Int8Format("u8s8", False, "this CPU has VNNI: uint8 x int8 products are exact")
REDUCED = Int8Format("u8s8-reduce-range", True, "this CPU has no VNNI: 7-bit weights keep VPMADDUBSW's sums from "
                                                "saturating (ONNX Runtime's remedy)")  # fmt: skip


def int8_format(cpu: Cpu) -> Int8Format:
    """The int8 format that keeps accuracy on ``cpu``."""
    return EXACT if cpu.exact_int8 else REDUCED
