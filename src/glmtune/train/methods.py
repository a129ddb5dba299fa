"""Fine-tuning methods: LoRA, P-Tuning v2 (peft prefix tuning) and full SFT (combinations checked before the run)."""

from __future__ import annotations

import logging
from typing import Any

from peft import LoraConfig, PrefixTuningConfig, get_peft_model
from torch import nn
from transformers import PreTrainedModel

from glmtune.config_rules import MethodError, lora_targets
from glmtune.model.compat import peft_wrapping
from glmtune.family import DEFAULT_FAMILY
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


def apply_method(model: PreTrainedModel, settings: TrainSettings, trust_remote_code: bool,
                 family: str = DEFAULT_FAMILY) -> PreTrainedModel:
    """Wrap the model for its method; full SFT trains every weight as it is. The combination was checked before the
    run (glmtune.config_rules.check_method). LoRA target names are the family's; with `trust_remote_code` the model
    has the original ChatGLM modules, so the targets take their names."""
    if settings.method == "lora":
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
