"""Fine-tuning methods: LoRA, QLoRA, P-Tuning v2 (peft prefix tuning) and full SFT (combinations checked before the
run).

QLoRA is LoRA on a base that glmtune.model.loading.load_model loaded in 4-bit NF4 (`four_bit=uses_four_bit(...)`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from peft import LoraConfig, PrefixTuningConfig, get_peft_model, prepare_model_for_kbit_training
from torch import nn
from transformers import PreTrainedModel

from glmtune.config_rules import MethodError, lora_targets
from glmtune.model.compat import peft_wrapping
from glmtune.settings import TrainSettings

log = logging.getLogger(__name__)

OUTPUT_LAYERS = ("output_layer", "lm_head")  # never a LoRA target under `all`


def linear_layer_names(model: nn.Module) -> list[str]:
    """The distinct names of the model's linear layers (last name part), output layer left out, in model order."""
    names: list[str] = []
    for path, module in model.named_modules():
        name = path.rsplit(".", 1)[-1]
        if isinstance(module, nn.Linear) and name not in OUTPUT_LAYERS and name not in names:
            names.append(name)
    return names


def resolve_all(model: nn.Module, targets: list[str]) -> list[str]:
    """`all` as the linear layers the (remote-code) model really has; other names must exist in it."""
    present = linear_layer_names(model)
    if targets == ["all"]:
        return present
    missing = [name for name in targets if name not in present]
    if missing:
        raise MethodError(f"train.lora.target_modules: {', '.join(missing)} not among the model's linear layers "
                          f"({', '.join(present)})")
    return targets


def uses_four_bit(settings: TrainSettings) -> bool:
    """Whether the method trains on a 4-bit base (load_model's `four_bit`)."""
    return settings.method == "qlora"


def prepare_four_bit(model: PreTrainedModel, gradient_checkpointing: bool) -> PreTrainedModel:
    """peft's preparation of a 4-bit base for training (frozen base; norms and output layer in fp32, so the logits
    are fp32; input gradients for checkpointing), except that the input embedding stays bf16: a frozen lookup gains
    nothing from the fp32 copy, which costs 151,552 × 4,096 × 2 bytes ≈ 1.2 GB more on GLM-4-9B."""
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    model.get_input_embeddings().to(torch.bfloat16)
    return model


def apply_method(model: PreTrainedModel, settings: TrainSettings, trust_remote_code: bool,
                 family: str) -> PreTrainedModel:
    """Wrap the model for its method; full SFT trains every weight as it is. The combination was checked before the
    run (glmtune.config_rules.check_method). LoRA target names are the family's; with `trust_remote_code` the model
    has the original ChatGLM modules, so the targets take their names. QLoRA: the model was loaded in 4-bit
    (uses_four_bit), is prepared by prepare_four_bit, then gets the same LoRA as `lora`."""
    if settings.method == "qlora":
        model = prepare_four_bit(model, settings.gradient_checkpointing)
    if settings.method in ("lora", "qlora"):
        lora = settings.lora
        targets = lora_targets(lora.target_modules, trust_remote_code, family)
        if trust_remote_code:
            targets = resolve_all(model, targets)
        config: Any = LoraConfig(
            task_type="CAUSAL_LM", r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=targets, use_rslora=lora.use_rslora, use_dora=lora.use_dora,
        )
    elif settings.method == "ptuning":
        ptuning = settings.ptuning
        config = PrefixTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=ptuning.num_virtual_tokens,
            prefix_projection=ptuning.prefix_projection,
            encoder_hidden_size=ptuning.encoder_hidden_size or model.config.hidden_size,
        )
    else:
        return model
    with peft_wrapping():
        return get_peft_model(model, config)
