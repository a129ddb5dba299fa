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


def test_eta_leaves_the_first_logged_steps_compilation_out(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A 40 s compilation in the first 5 steps, then 1 s a step: the ETA at step 10 of 100 is 90 s, not 450 s."""
    from types import SimpleNamespace

    from glmtune.train.callbacks import JsonlLogger

    logger = JsonlLogger(tmp_path / "log.jsonl", SimpleNamespace(real_tokens=0))
    state = SimpleNamespace(global_step=0, is_world_process_zero=True, max_steps=100)
    logger.on_train_begin(SimpleNamespace(world_size=1), state, None)
    assert logger.eta_s(5, 100, 45.0) == 95 * 9.0  # only one logged step: the plain mean
    logger.first_logged = (5, 45.0)
    assert logger.eta_s(10, 100, 50.0) == 90.0
