"""The per-device speed table: the CPU keeps the model's own path; a GPU gets flex attention for packed rows."""

from __future__ import annotations

import pytest
from helpers.settings import train_settings

from glmtune.train.attention import speed_path


def test_cpu_path_is_unchanged_and_gpu_path_is_the_fast_one(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = speed_path(train_settings(packing=True), "cpu")
    assert (cpu.attention, cpu.loss, cpu.liger_kernels, cpu.pad_multiple) == (None, "plain", False, 1)
    monkeypatch.setattr("glmtune.train.attention.liger_installed", lambda: False)
    gpu = speed_path(train_settings(packing=True), "cuda")
    assert (gpu.attention, gpu.loss, gpu.pad_multiple) == ("flex_attention", "chunked", 64)
    assert speed_path(train_settings(packing=False), "cuda").attention == "sdpa"
    assert speed_path(train_settings(method="ptuning"), "cuda").loss == "plain"  # the prefix is the KV cache
    monkeypatch.setattr("glmtune.train.attention.liger_installed", lambda: True)
    assert speed_path(train_settings(), "cuda").loss == "liger"


def test_gpu_only_choices_are_refused_on_a_cpu() -> None:
    with pytest.raises(ValueError, match="flex_attention needs a CUDA GPU"):
        speed_path(train_settings(attention="flex_attention"), "cpu")
    with pytest.raises(ValueError, match="liger"):
        speed_path(train_settings(loss="liger"), "cpu")
    with pytest.raises(ValueError, match="liger"):
        speed_path(train_settings(liger_kernels=True), "cpu")
