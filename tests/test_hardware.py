"""What the machine offers, and what each kind of machine is given: the int8 format, the device, its
precision and the engine - simulated for each kind, so that the choice is tested on every machine."""

import pytest

from transferlab.errors import ConfigError
from transferlab.hardware import (
    EXACT,
    REDUCED,
    Cpu,
    autocast_dtype,
    check_device,
    choose_engine,
    int8_format,
    resolve_device,
    this_cpu,
)

VNNI = Cpu(avx2=True, avx512=True, vnni=True, avx512_bf16=True, amx=False)
AVX512_ONLY = Cpu(avx2=True, avx512=True, vnni=False, avx512_bf16=False, amx=False)
AVX2_ONLY = Cpu(avx2=True, avx512=False, vnni=False, avx512_bf16=False, amx=False)


def test_the_cpu_is_read_and_named():
    cpu = this_cpu()
    assert cpu.avx2 or not cpu.avx512  # AVX-512 machines have AVX2
    assert cpu.kind in ("AVX-512 with VNNI", "AVX-512 with VNNI and AMX", "AVX-512 without VNNI", "AVX2 only (no VNNI)",
                        "without AVX2")  # fmt: skip
    assert AVX2_ONLY.kind == "AVX2 only (no VNNI)" and VNNI.kind == "AVX-512 with VNNI"


@pytest.mark.parametrize("cpu, expected", [(VNNI, EXACT), (AVX512_ONLY, REDUCED), (AVX2_ONLY, REDUCED)])
def test_int8_uses_7_bit_weights_where_the_kernels_could_saturate(cpu, expected):
    assert int8_format(cpu) == expected
    assert expected.reduce_range is (not cpu.exact_int8)


@pytest.mark.parametrize(
    "requested, cuda_devices, expected",
    [("auto", 0, "cpu"), ("auto", 2, "cuda:0"), ("cpu", 2, "cpu"), ("cuda", 1, "cuda:0"), ("cuda:1", 2, "cuda:1")],
)
def test_the_device_is_a_gpu_when_there_is_one(requested, cuda_devices, expected):
    assert resolve_device(check_device(requested), cuda_devices) == expected


def test_under_torchrun_each_process_takes_the_gpu_of_its_local_rank(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("auto", 2) == "cuda:1" and resolve_device("auto", 0) == "cpu"


def test_a_device_that_is_not_there_or_not_a_device_is_one_line():
    with pytest.raises(ConfigError, match=r"--device cuda:1: this machine has 1 CUDA device\(s\) \(cuda:0 to cuda:0\)"):
        resolve_device("cuda:1", 1)
    with pytest.raises(ConfigError, match="this machine has 0 CUDA device"):
        resolve_device("cuda", 0)
    with pytest.raises(ConfigError, match="--device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        check_device("gpu")


def test_mixed_precision_only_on_a_gpu_with_bfloat16():
    assert autocast_dtype("cpu", bf16_supported=True) is None  # the CPU path stays float32
    assert autocast_dtype("cuda:0", bf16_supported=True) == "bfloat16"
    assert autocast_dtype("cuda:0", bf16_supported=False) is None


@pytest.mark.parametrize(
    "requested, device, cpu, onnxruntime, images, exported, expected",
    [
        ("onnxruntime-int8", "cpu", AVX2_ONLY, True, 10, False, "onnxruntime-int8"),  # asked for: given
        ("auto", "cuda:0", VNNI, True, 100_000, False, "pytorch"),  # a GPU runs PyTorch
        ("auto", "cpu", VNNI, False, 100_000, False, "pytorch"),  # no onnxruntime
        ("auto", "cpu", AVX2_ONLY, True, 100_000, False, "pytorch"),  # not measured faster there
        ("auto", "cpu", VNNI, True, 100, False, "pytorch"),  # too few images to pay for the export
        ("auto", "cpu", VNNI, True, 100, True, "onnxruntime"),  # the export is cached
        ("auto", "cpu", VNNI, True, 60_000, False, "onnxruntime"),
    ],
)
def test_auto_takes_the_fastest_engine_that_is_correct_here(requested, device, cpu, onnxruntime, images, exported,
                                                            expected):  # fmt: skip
    choice = choose_engine(requested, device, cpu, onnxruntime, images, 112, exported)
    assert choice.engine == expected and choice.reason
