"""Fine-tuning methods: LoRA, P-Tuning v2 (peft prefix tuning) and full SFT, checked before a run starts."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from peft import LoraConfig, PrefixTuningConfig, get_peft_model
from transformers import PreTrainedModel

log = logging.getLogger(__name__)

GLM_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj")
# The original ChatGLM module names the official demos' configs use, mapped to transformers' GLM names.
ORIGINAL_NAMES = {
    "query_key_value": ("q_proj", "k_proj", "v_proj"),
    "dense": ("o_proj",),
    "dense_h_to_4h": ("gate_up_proj",),
    "dense_4h_to_h": ("down_proj",),
    "all": GLM_LINEAR,
}


class MethodError(ValueError):
    """A method setting that cannot work; the message names the key and what to do."""


def lora_targets(names: Iterable[str]) -> list[str]:
    """GLM module names for `train.lora.target_modules`, accepting the demos' original names."""
    targets: list[str] = []
    for name in names:
        if name in GLM_LINEAR:
            expanded: tuple[str, ...] = (name,)
        elif name in ORIGINAL_NAMES:
            expanded = ORIGINAL_NAMES[name]
            log.info("train.lora.target_modules: %r is the original ChatGLM name; using %s", name, ", ".join(expanded))
        else:
            raise MethodError(f"train.lora.target_modules: {name!r} matches no GLM layer; use {', '.join(GLM_LINEAR)}, "
                              f"'all', or an original name ({', '.join(k for k in ORIGINAL_NAMES if k != 'all')})")
        targets += [t for t in expanded if t not in targets]
    return targets


def check_method(settings: dict[str, Any]) -> None:
    """Refuse combinations known to fail mid-run, before any model is loaded."""
    method = settings.get("method", "lora")
    if method not in ("lora", "ptuning", "full"):
        raise MethodError(f"train.method: unknown method {method!r}; use lora, ptuning or full")
    if method == "ptuning" and settings.get("gradient_checkpointing"):
        raise MethodError("train.gradient_checkpointing cannot be combined with train.method: ptuning "
                          "(peft prefix tuning breaks on transformers 5 with checkpointing: tensor size mismatch); "
                          "turn gradient_checkpointing off or use lora")
    if method == "lora":
        lora_targets(settings["lora"]["target_modules"])


def apply_method(model: PreTrainedModel, settings: dict[str, Any]) -> PreTrainedModel:
    """Wrap the model for its method; full SFT trains every weight as it is."""
    check_method(settings)
    method = settings.get("method", "lora")
    if method == "lora":
        lora = settings["lora"]
        config: Any = LoraConfig(
            task_type="CAUSAL_LM", r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
            target_modules=lora_targets(lora["target_modules"]), use_rslora=lora.get("use_rslora", False),
            use_dora=lora.get("use_dora", False),
        )
    elif method == "ptuning":
        ptuning = settings.get("ptuning", {})
        config = PrefixTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=ptuning.get("num_virtual_tokens", 128),
            prefix_projection=ptuning.get("prefix_projection", False),
            encoder_hidden_size=ptuning.get("encoder_hidden_size") or model.config.hidden_size,
        )
    else:
        return model
    return get_peft_model(model, config)
