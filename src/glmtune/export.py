"""Merge a LoRA adapter into its base model and save a plain transformers folder, verified."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from .io import atomic_path, read_jsonl
from .templates import encode_prompt, get_template, split_for_generation

log = logging.getLogger(__name__)


class ExportCheckFailed(RuntimeError):
    """The merged model does not reproduce the adapter model's logits."""


def sample_inputs(test_path: str | Path, tokenizer: Any, template_name: str, count: int = 4) -> list[list[int]]:
    """A few real prompts from the test split to compare logits on."""
    template = get_template(template_name)
    rows = [row for _, row in zip(range(count), read_jsonl(test_path))]
    return [encode_prompt(tokenizer, template, split_for_generation(row["conversations"])[0]) for row in rows]


def merge_adapter(
    adapter_dir: str | Path, base_dir: str | Path, out_dir: str | Path, test_path: str | Path, template_name: str,
    tolerance: float = 1e-4, extra_files: dict[str, str | Path] | None = None,
    dtype: str = "float32", max_shard_size_gb: float = 5.0,
) -> float:
    """merge_and_unload the adapter into the base, check logits on test prompts, then save to out_dir.

    `dtype` bfloat16/float16 halves the memory needed for a large base (on CPU too); the safetensors are
    sharded at `max_shard_size_gb` (LLaMA-Factory's export_size). The folder is written beside out_dir
    and renamed into place only after the check passes and the folder reloads.
    """
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=getattr(torch, dtype))
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    adapter_model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    inputs = sample_inputs(test_path, tokenizer, template_name)
    with torch.inference_mode():
        reference = [adapter_model(torch.tensor([ids])).logits.clone() for ids in inputs]
    merged = adapter_model.merge_and_unload().eval()
    with torch.inference_mode():
        worst = max(((merged(torch.tensor([ids])).logits - ref).abs().max().item() for ids, ref in zip(inputs, reference)), default=0.0)
    if worst > tolerance:
        raise ExportCheckFailed(f"merged logits differ from the adapter model's by {worst:.3g} (> {tolerance}); nothing was written")
    log.info("merged model matches the adapter model: max |logit difference| %.3g on %d prompts", worst, len(inputs))
    with atomic_path(out_dir) as tmp:
        merged.save_pretrained(tmp, max_shard_size=f"{int(max_shard_size_gb * 1000)}MB")  # safetensors
        tokenizer.save_pretrained(tmp)
        if merged.generation_config is None:
            merged.generation_config = GenerationConfig.from_pretrained(str(base_dir))
        merged.generation_config.save_pretrained(tmp)
        for name, path in (extra_files or {}).items():
            shutil.copyfile(path, Path(tmp) / name)
        # Reload with plain transformers before declaring success.
        AutoModelForCausalLM.from_pretrained(str(tmp))
        AutoTokenizer.from_pretrained(str(tmp))
    return worst
