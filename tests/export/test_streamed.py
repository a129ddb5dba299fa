"""The layer-by-layer forward read from the shards equals the whole model's forward, and PEFT's with a LoRA."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from glmtune.export.lora_math import read_deltas
from glmtune.export.shards import Weights
from glmtune.export.streamed import streamed_logits
from glmtune.model.loading import load_tokenizer
from glmtune.export.prompts import sample_inputs

ATOL = 1e-5  # fp32: the same operations, the head in chunks of rows


def _prompts(small_run: dict[str, Path]) -> list[list[int]]:
    return sample_inputs(small_run["test"], load_tokenizer(small_run["model"], trust_remote_code=False), "glm4")


def _fp32(weights: Weights):  # type: ignore[no-untyped-def]
    return lambda name: weights.get(name).to(torch.float32)


def test_the_streamed_forward_equals_the_whole_model_and_reads_shards(small_run: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(small_run["model"]).save_pretrained(folder, max_shard_size=60_000)
    weights = Weights(folder)
    assert len({entry.file for entry in weights.entries.values()}) > 2
    prompts = _prompts(small_run)
    config = AutoConfig.from_pretrained(folder)
    assert config.num_hidden_layers >= 2
    streamed = streamed_logits(config, weights, _fp32(weights), prompts)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.inference_mode():
        for ids, got in zip(prompts, streamed):
            whole = model(torch.tensor([ids])).logits
            assert got.shape == whole.shape and torch.allclose(got, whole, atol=ATOL, rtol=0)


def test_the_streamed_adapter_forward_equals_peft(small_run: dict[str, Path]) -> None:
    from peft import PeftModel

    weights = Weights(small_run["model"])
    deltas = read_deltas(small_run["adapter"], set(weights.entries))
    prompts = _prompts(small_run)
    config = AutoConfig.from_pretrained(small_run["model"])
    streamed = streamed_logits(config, weights, _fp32(weights), prompts, deltas)
    plain = streamed_logits(config, weights, _fp32(weights), prompts)
    base = AutoModelForCausalLM.from_pretrained(small_run["model"], dtype=torch.float32)
    peft = PeftModel.from_pretrained(base, small_run["adapter"]).eval()
    with torch.inference_mode():
        for ids, got, without in zip(prompts, streamed, plain):
            reference = peft(torch.tensor([ids])).logits
            assert torch.allclose(got, reference, atol=ATOL, rtol=0)
            assert not torch.allclose(got, without, atol=1e-2)  # the LoRA matters: without it, another model
