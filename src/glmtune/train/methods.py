"""The wrapping of the fine-tuning methods: LoRA, QLoRA, P-Tuning v2 (peft prefix tuning); full SFT trains the model
as it is. Which method wraps how (and everything else about it) is its entry in glmtune.train.method_registry.

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
from glmtune.train.method_registry import get_method

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
    return get_method(settings.method).four_bit


def prepare_four_bit(model: PreTrainedModel, gradient_checkpointing: bool) -> PreTrainedModel:
    """peft's preparation of a 4-bit base for training (frozen base; norms and output layer in fp32, so the logits
    are fp32; input gradients for checkpointing), except that the input embedding stays bf16: a frozen lookup gains
    nothing from the fp32 copy, which costs 151,552 × 4,096 × 2 bytes ≈ 1.2 GB more on GLM-4-9B."""
    with peft_wrapping():
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    model.get_input_embeddings().to(torch.bfloat16)
    return model


def apply_method(model: PreTrainedModel, settings: TrainSettings, trust_remote_code: bool,
                 family: str) -> PreTrainedModel:
    """Wrap the model as its method's entry says (glmtune.train.method_registry); a method without a wrap (full SFT)
    trains every weight as it is. The combination was checked before the run (glmtune.config_rules.check_method)."""
    wrap = get_method(settings.method).wrapper()
    return model if wrap is None else wrap(model, settings, trust_remote_code, family)


def wrap_lora(model: PreTrainedModel, settings: TrainSettings, trust_remote_code: bool, family: str) -> PreTrainedModel:
    """LoRA on the family's target names; with `trust_remote_code` the model has the original ChatGLM modules, so
    the targets take their names."""
    lora = settings.lora
    assert lora is not None, "a LoRA run reads train.lora (glmtune.experiments.train_read keeps it)"
    targets = lora_targets(lora.target_modules, trust_remote_code, family)
    if trust_remote_code:
        targets = resolve_all(model, targets)
    config = LoraConfig(
        task_type="CAUSAL_LM", r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=targets, use_rslora=lora.use_rslora, use_dora=lora.use_dora,
    )
    if settings.gradient_checkpointing:
        # A reentrant checkpoint (the original ChatGLM3 code's) passes gradients only to inputs that need one; the
        # frozen embedding's output needs none, so no LoRA weight inside a layer would get one (the first step fails:
        # "element 0 of tensors does not require grad"). transformers 5 turns this on itself, the old transformers of
        # the remote code does not; the demos call it too.
        model.enable_input_require_grads()
    return peft_wrap(model, config)


def wrap_qlora(model: PreTrainedModel, settings: TrainSettings, trust_remote_code: bool, family: str) -> PreTrainedModel:
    """QLoRA: the model was loaded in 4-bit (uses_four_bit), is prepared by prepare_four_bit, then gets the same LoRA."""
    model = prepare_four_bit(model, settings.gradient_checkpointing)
    return wrap_lora(model, settings, trust_remote_code, family)


def wrap_prefix(model: PreTrainedModel, settings: TrainSettings, trust_remote_code: bool, family: str) -> PreTrainedModel:
    """P-Tuning v2: peft prefix tuning."""
    ptuning = settings.ptuning
    assert ptuning is not None, "a P-Tuning v2 run reads train.ptuning (glmtune.experiments.train_read keeps it)"
    config = PrefixTuningConfig(
        task_type="CAUSAL_LM", num_virtual_tokens=ptuning.num_virtual_tokens,
        prefix_projection=ptuning.prefix_projection,
        encoder_hidden_size=ptuning.encoder_hidden_size or model.config.hidden_size,
    )
    return peft_wrap(model, config)


def peft_wrap(model: PreTrainedModel, config: Any) -> PreTrainedModel:
    """get_peft_model, under the transformers-version shim the wrapping needs."""
    with peft_wrapping():
        return get_peft_model(model, config)
