"""Random models of a real architecture for benchmarks: no weights need downloading."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import GlmConfig, GlmForCausalLM

from glmtune.model.compat import peft_wrapping
from glmtune.model.convert_original import native_config


def arch_config(config_json: str | Path) -> GlmConfig:
    """A GlmConfig from a native config.json or an original ChatGLM3 / GLM-4 one."""
    raw = json.loads(Path(config_json).read_text(encoding="utf-8"))
    if raw.get("model_type") == "glm":
        return GlmConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "model_type", "transformers_version")})
    return native_config(raw)


def random_causal_lm(config_json: str | Path) -> GlmForCausalLM:
    """Random weights of the architecture for generation benchmarks: built straight in bf16 on a GPU (no float32
    copy, so a 9B model needs 18 GB, not 54), float32 on CPU; in eval mode."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = GlmForCausalLM._from_config(arch_config(config_json), dtype=dtype)
    return model.eval()


def random_lora_model(config_json: str | Path, targets: list[str], checkpointing: bool, r: int = 8) -> torch.nn.Module:
    """Random weights (bf16 on a GPU), LoRA on `targets`; checkpointing as the demos turn it on."""
    config = arch_config(config_json)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = GlmForCausalLM(config).to(dtype)
    model.config.use_cache = False
    if checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()  # LoRA + checkpointing needs grads flowing from the embeddings
    with peft_wrapping():
        return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=r, lora_alpha=32, target_modules=targets))
