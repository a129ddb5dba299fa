"""Merge a LoRA adapter into its base model and save a plain transformers folder, verified."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from .compat import load_kwargs
from .io import atomic_path, read_jsonl
from .templates import encode_prompt, get_template, split_for_generation

log = logging.getLogger(__name__)


class ExportCheckFailed(RuntimeError):
    """The merged model does not reproduce the adapter model's logits."""


class CannotMerge(ValueError):
    """The trained artifact has nothing that can be merged into the weights."""


def trained_kind(trained_dir: str | Path) -> str:
    """"lora", "prefix" (P-Tuning v2) or "full" for a training output folder."""
    config = Path(trained_dir) / "adapter_config.json"
    if not config.is_file():
        return "full"
    peft_type = json.loads(config.read_text(encoding="utf-8")).get("peft_type", "")
    return "prefix" if peft_type == "PREFIX_TUNING" else "lora"


def export_model(trained_dir: str | Path, base_dir: str | Path, out_dir: str | Path, test_path: str | Path,
                 template_name: str, tolerance: float, extra_files: dict[str, str | Path] | None = None,
                 dtype: str = "float32", max_shard_size_gb: float = 5.0, trust_remote_code: bool = False) -> None:
    """The export stage: merge a LoRA, re-save a fully fine-tuned model, refuse P-Tuning v2 with the reason.

    `trust_remote_code` (model.trust_remote_code): the model runs its folder's own modeling code, and the saved
    folder keeps that code (*.py, config auto_map) so it loads again with trust_remote_code.
    """
    kind = trained_kind(trained_dir)
    if kind == "prefix":
        raise CannotMerge(
            f"{trained_dir} is a P-Tuning v2 (prefix tuning) adapter: its learned prefixes are extra attention inputs, "
            f"not weight deltas, so there is nothing to merge and results/merged_model is not made. Use the adapter "
            f"as it is: `glmtune infer {trained_dir} --prompt ...` (it loads the base through adapter_config.json)."
        )
    if kind == "lora":
        merge_adapter(trained_dir, base_dir, out_dir, test_path, template_name, tolerance, extra_files, dtype, max_shard_size_gb,
                      trust_remote_code)
        return
    model = AutoModelForCausalLM.from_pretrained(str(trained_dir), **load_kwargs(getattr(torch, dtype), trust_remote_code))
    tokenizer = AutoTokenizer.from_pretrained(str(trained_dir), **load_kwargs(None, trust_remote_code))
    _save_checked(model, tokenizer, out_dir, base_dir, extra_files, max_shard_size_gb, trust_remote_code)


def sample_inputs(test_path: str | Path, tokenizer: Any, template_name: str, count: int = 4) -> list[list[int]]:
    """A few real prompts from the test split to compare logits on."""
    template = get_template(template_name)
    rows = [row for _, row in zip(range(count), read_jsonl(test_path))]
    return [encode_prompt(tokenizer, template, split_for_generation(row["conversations"])[0]) for row in rows]


def merge_adapter(
    adapter_dir: str | Path, base_dir: str | Path, out_dir: str | Path, test_path: str | Path, template_name: str,
    tolerance: float = 1e-4, extra_files: dict[str, str | Path] | None = None,
    dtype: str = "float32", max_shard_size_gb: float = 5.0, trust_remote_code: bool = False,
) -> float:
    """merge_and_unload the adapter into the base, check logits on test prompts, then save to out_dir.

    `dtype` bfloat16/float16 halves the memory needed for a large base (on CPU too); the safetensors are
    sharded at `max_shard_size_gb` (LLaMA-Factory's export_size). The folder is written beside out_dir
    and renamed into place only after the check passes and the folder reloads.
    """
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), **load_kwargs(getattr(torch, dtype), trust_remote_code))
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir), **load_kwargs(None, trust_remote_code))
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
    _save_checked(merged, tokenizer, out_dir, base_dir, extra_files, max_shard_size_gb, trust_remote_code)
    return worst


def _save_checked(model: Any, tokenizer: Any, out_dir: str | Path, base_dir: str | Path,
                  extra_files: dict[str, str | Path] | None, max_shard_size_gb: float, trust_remote_code: bool = False) -> None:
    """Save beside out_dir, reload with plain transformers (or the remote code it carries), then rename into place."""
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, max_shard_size=int(max_shard_size_gb * 1e9))  # safetensors, bytes (not "0MB" below 1 MB)
        tokenizer.save_pretrained(tmp)
        if model.generation_config is None:
            model.generation_config = GenerationConfig.from_pretrained(str(base_dir))
        model.generation_config.save_pretrained(tmp)
        for name, path in (extra_files or {}).items():
            shutil.copyfile(path, Path(tmp) / name)
        if trust_remote_code:
            from .remote_code import carry_remote_code

            carry_remote_code(base_dir, tmp)
        AutoModelForCausalLM.from_pretrained(str(tmp), **load_kwargs(None, trust_remote_code))
        AutoTokenizer.from_pretrained(str(tmp), **load_kwargs(None, trust_remote_code))
