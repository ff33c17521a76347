"""train.precision: auto picks bf16 where torch reports native bf16 units (CUDA, AMX, AVX512-BF16), fp32 elsewhere."""

import pytest
import torch

from gwlora import precision
from gwlora.cli import StageError
from gwlora.precision import autocast, resolve_precision

CPU = torch.device("cpu")


def fake_cpu(monkeypatch, **features):
    for name in ("amx_tile", "avx512_bf16"):
        monkeypatch.setattr(torch.cpu, f"_is_{name}_supported", lambda value=features.get(name, False): value, raising=False)


@pytest.mark.parametrize("features, units", [
    ({"amx_tile": True, "avx512_bf16": True}, ["amx_bf16", "avx512_bf16"]),  # Sapphire Rapids and later
    ({"avx512_bf16": True}, ["avx512_bf16"]),  # Cooper Lake, AMD Zen 4
])
def test_auto_is_bf16_on_a_cpu_with_native_bf16_units(monkeypatch, features, units):
    fake_cpu(monkeypatch, **features)
    chosen = resolve_precision("auto", CPU)
    assert chosen.name == "bf16" and all(u in chosen.reason for u in units)


def test_auto_is_fp32_on_a_cpu_without_them(monkeypatch):
    fake_cpu(monkeypatch)
    chosen = resolve_precision("auto", CPU)
    assert chosen.name == "fp32" and "no native bf16" in chosen.reason


def test_auto_is_bf16_on_cuda_whatever_the_host_cpu(monkeypatch):
    fake_cpu(monkeypatch)
    assert resolve_precision("auto", torch.device("cuda")).name == "bf16"


def test_a_torch_without_the_checks_counts_as_no_units(monkeypatch):
    for name in ("amx_tile", "avx512_bf16"):
        monkeypatch.delattr(torch.cpu, f"_is_{name}_supported", raising=False)
    assert precision.cpu_bf16_units() == [] and resolve_precision("auto", CPU).name == "fp32"


def test_an_explicit_setting_is_obeyed_on_any_processor(monkeypatch):
    fake_cpu(monkeypatch)
    assert resolve_precision("bf16", CPU).name == "bf16"
    fake_cpu(monkeypatch, amx_tile=True, avx512_bf16=True)
    assert resolve_precision("fp32", CPU).name == "fp32"


def test_a_resumed_run_keeps_its_recorded_precision(monkeypatch):
    fake_cpu(monkeypatch)  # it started on an AMX machine in bf16 and resumes on one without
    chosen = resolve_precision("auto", CPU, recorded="bf16")
    assert chosen.name == "bf16" and "resumed" in chosen.reason
    with pytest.raises(StageError, match="records precision 'fp16'"):
        resolve_precision("auto", CPU, recorded="fp16")


def test_an_unknown_setting_names_the_key_and_the_choices():
    with pytest.raises(StageError, match=r"train.precision 'half': expected one of auto, fp32, bf16"):
        resolve_precision("half", CPU)


def test_bf16_autocast_computes_matmuls_in_bf16_and_fp32_does_not():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast(resolve_precision("bf16", CPU), CPU):
        assert (a @ b).dtype == torch.bfloat16
    with autocast(resolve_precision("fp32", CPU), CPU):
        assert (a @ b).dtype == torch.float32
