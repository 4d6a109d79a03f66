"""What this machine offers: the CPU's instruction sets, read as the compute kernels read them
(cpuid, through PyTorch's cpuinfo), the int8 format that keeps its accuracy there, the device a run
uses (a GPU when there is one) and its precision, and the engine of the frozen forward passes.

ONNX Runtime's x86 int8 kernels multiply uint8 activations by int8 weights (U8S8). With AVX-512
VNNI (or AMX) one instruction does it exactly; without VNNI the AVX2 and AVX-512 kernels use
VPMADDUBSW, whose 16-bit intermediate sums can saturate - ONNX Runtime's quantization guide names
the remedy, 7-bit weights (``reduce_range``). Measured both ways in docs/speed.md.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from .errors import ConfigError


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


# --------------------------------------------------------------------------------------------
# The device a run's networks go on, and the precision they run in there.

DEVICES = "auto, cpu, cuda or cuda:N"


def check_device(text: str) -> str:
    """``text`` if it names a device this option takes (``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""
    kind, _, index = text.partition(":")
    if text in ("auto", "cpu", "cuda") or (kind == "cuda" and index.isdigit()):
        return text
    raise ConfigError(f"--device must be {DEVICES}, got {text!r}.")


def resolve_device(requested: str, cuda_devices: int | None = None) -> str:
    """The device a run uses: ``auto`` takes the first GPU when CUDA has one, else the CPU; a GPU
    asked for by name must exist. ``cuda_devices``: how many CUDA reports (default: ask it)."""
    if cuda_devices is None:
        import torch

        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if requested == "auto":  # under torchrun, each process takes the GPU of its local rank
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % cuda_devices}" if cuda_devices else "cpu"
    if requested == "cpu":
        return "cpu"
    index = int(requested.partition(":")[2] or 0)
    if index >= cuda_devices:
        raise ConfigError(f"--device {requested}: this machine has {cuda_devices} CUDA device(s) "
                          f"({'none' if not cuda_devices else f'cuda:0 to cuda:{cuda_devices - 1}'}); use --device cpu.")  # fmt: skip
    return f"cuda:{index}"


def autocast_dtype(device: str, bf16_supported: bool | None = None) -> str | None:
    """The mixed precision a device trains in: none on the CPU (its float32 path stays the tested
    one), bfloat16 on a GPU that supports it (Ampere and newer; no loss scaling needed), else none
    (float16 would need loss scaling: such GPUs train in float32)."""
    if not device.startswith("cuda"):
        return None
    if bf16_supported is None:
        import torch

        bf16_supported = torch.cuda.is_bf16_supported()
    return "bfloat16" if bf16_supported else None


# --------------------------------------------------------------------------------------------
# The engine of the frozen forward passes, chosen for the machine and the job.

# Measured on EfficientNet-Lite0 under tcmalloc, 2 cores, AVX-512 VNNI (`python benchmarks/speed.py --only
# onnxruntime` with tcmalloc preloaded, as the CLI runs; docs/speed.md), taken at their least favourable
# to ONNX Runtime: it ran 1.16x to 1.44x PyTorch's speed, PyTorch up to 378 img/s at 112 px, the
# export and load took up to 2.2 s.
ORT_SPEEDUP = 1.16
PYTORCH_SECONDS_PER_IMAGE_AT_112 = 1 / 378
EXPORT_SECONDS = 2.2


@dataclass(frozen=True)
class EngineChoice:
    engine: str
    reason: str


def choose_engine(requested: str, device: str, cpu: Cpu, onnxruntime: bool, images: int, resolution: int,
                  exported: bool) -> EngineChoice:  # fmt: skip
    """The engine of a frozen pass over ``images`` at ``resolution``: the one asked for, or for
    ``auto`` the fastest that is correct here - PyTorch on a GPU; float32 ONNX Runtime on a CPU
    where it was measured faster (AVX-512) once the images are enough to pay for the export (or the
    export is ``exported`` already); else PyTorch. int8 and bf16 change the features, so ``auto``
    never picks them."""
    if requested != "auto":
        return EngineChoice(requested, "asked for")
    if device.startswith("cuda"):
        return EngineChoice("pytorch", f"PyTorch runs on the GPU ({device})")
    if not onnxruntime:
        return EngineChoice("pytorch", "onnxruntime is not installed")
    if not cpu.avx512:
        return EngineChoice("pytorch", f"ONNX Runtime's speed is not measured on this CPU ({cpu.kind})")
    saving = images * PYTORCH_SECONDS_PER_IMAGE_AT_112 * (resolution / 112) ** 2 * (1 - 1 / ORT_SPEEDUP)
    if not exported and saving < EXPORT_SECONDS:
        return EngineChoice("pytorch", f"{images} images at {resolution} px would save {saving:.1f} s on ONNX Runtime, "
                                       f"less than the {EXPORT_SECONDS:.1f} s its export takes")  # fmt: skip
    return EngineChoice("onnxruntime", f"float32 ONNX Runtime, {ORT_SPEEDUP}x PyTorch on this kind of CPU ({cpu.kind})"
                                       + ("; its export is cached" if exported else f"; saves about {saving:.0f} s here"))
