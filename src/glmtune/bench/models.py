"""Random models of a real architecture for benchmarks: no weights need downloading. A native config.json gives its
own transformers architecture (any family's, glmtune.family.Architecture); an original ChatGLM3 / GLM-4 one, GLM's."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import torch
from transformers import CONFIG_MAPPING, AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from glmtune.model.convert_original import native_config


def arch_config(config_json: str | Path) -> PretrainedConfig:
    """The transformers config of a native config.json (its model_type's), or the GlmConfig of an original ChatGLM3 /
    GLM-4 one."""
    raw = json.loads(Path(config_json).read_text(encoding="utf-8"))
    model_type = raw.get("model_type")
    if model_type in CONFIG_MAPPING:
        return AutoConfig.for_model(model_type, **{k: v for k, v in raw.items()
                                                   if k not in ("architectures", "model_type", "transformers_version")})
    return native_config(raw)


def random_causal_lm(config_json: str | Path) -> PreTrainedModel:
    """Random weights of the architecture for generation benchmarks: built straight in bf16 on a GPU (no float32
    copy, so a 9B model needs 18 GB, not 54), float32 on CPU; in eval mode."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(arch_config(config_json), dtype=dtype)
    return model.eval()


def random_weights(folder: str | Path, *, dtype: str, trust_remote_code: bool, device: str | None = None,
                   four_bit: bool = False) -> torch.nn.Module:
    """glmtune.model.loading.load_model's stand-in for bench-train: the folder's architecture with random weights,
    in the dtype load_model would give, built straight on the GPU when there is one (seconds for 9B; no fp32 copy).

    `four_bit` (train.method: qlora): the random bf16 weights go through transformers' own 4-bit loading with
    load_model's settings (glmtune.model.loading.four_bit_copy); the bf16 copy is then freed and the GPU's
    peak-memory count restarts,
    since loading real weights quantises them one at a time and never holds the whole bf16 model."""
    from transformers import AutoModelForCausalLM

    from glmtune.model.loading import default_device, four_bit_copy, load_config, resolve_dtype

    config = load_config(folder, trust_remote_code=trust_remote_code)
    device = device or default_device()
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if four_bit else resolve_dtype(dtype, device))
    if not four_bit:
        return model
    quantised = four_bit_copy(model, device)
    del model
    gc.collect()  # a model holds reference cycles: free its bf16 weights now, not at some later collection
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return quantised
