"""Loading a model folder (merged or adapter) and batched greedy generation with the family's stop tokens."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .templates import ChatTemplate, stop_token_ids

log = logging.getLogger(__name__)


def resolve_base(adapter_dir: Path, base_override: str | Path | None) -> str:
    """The base model of an adapter folder: the override if given, else adapter_config.json's path."""
    if base_override:
        return str(base_override)
    base = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
    if not Path(base).exists():
        raise FileNotFoundError(
            f"{adapter_dir}: the base model recorded in adapter_config.json ({base}) does not exist here; "
            f"pass the base model's folder with --base-model"
        )
    return base


def load_model(model_dir: str | Path, base_override: str | Path | None = None, device: str | None = None,
               trust_remote_code: bool | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a merged/full model folder, or an adapter folder on top of its base model.

    `trust_remote_code` None: as the model folder (an adapter's base) records it, i.e. true only for folders
    prepared or exported with model.trust_remote_code: true (glmtune.remote_code).
    """
    from .compat import load_kwargs
    from .remote_code import recorded_trust

    model_dir = Path(model_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        base = resolve_base(model_dir, base_override)
        trust = recorded_trust(base) if trust_remote_code is None else trust_remote_code
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, **load_kwargs(dtype, trust)), str(model_dir))
        tokenizer_dir = model_dir if (model_dir / "tokenizer_config.json").is_file() else Path(base)
    else:
        trust = recorded_trust(model_dir) if trust_remote_code is None else trust_remote_code
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), **load_kwargs(dtype, trust))
        tokenizer_dir = model_dir
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), **load_kwargs(None, trust))
    tokenizer.padding_side = "left"  # generation continues from the right edge of every row
    return model.to(device).eval(), tokenizer


def plan_batches(prompts: Sequence[list[int]], batch_size: int, sort_by_length: bool = True) -> list[list[int]]:
    """Prompt indices cut into batches; sorted by length first, so a batch carries little padding.

    Several processes split this one plan batch by batch (`plan[rank::world]`), so every batch, and hence every
    prediction, is the same as in a single process.
    """
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i])) if sort_by_length else list(range(len(prompts)))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@torch.inference_mode()
def generate_batches(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, template: ChatTemplate,
    prompts: Sequence[list[int]], batches: Sequence[list[int]], max_new_tokens: int = 128, progress: bool = True,
    cache: str = "dynamic", min_new_tokens: int | None = None,
) -> dict[int, str]:
    """Greedy completions of the prompts in `batches` (lists of indices into `prompts`), by index.

    Rows are left-padded. `cache="static"` preallocates the KV cache (what lets CUDA graphs / torch.compile cut
    per-step launch overhead on a GPU).
    """
    stops = stop_token_ids(tokenizer, template)
    outputs: dict[int, str] = {}
    device = next(model.parameters()).device
    for rows in tqdm(batches, desc="generate", disable=not progress or None, mininterval=2):
        batch = tokenizer.pad({"input_ids": [prompts[i] for i in rows]}, return_tensors="pt").to(device)
        generated = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id, cache_implementation=None if cache == "dynamic" else cache,
            **({"min_new_tokens": min_new_tokens} if min_new_tokens else {}),
        )
        for row, ids in zip(rows, generated[:, batch["input_ids"].shape[1] :]):
            outputs[row] = tokenizer.decode(ids, skip_special_tokens=True).strip()
    return outputs


def generate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, template: ChatTemplate,
    prompts: Sequence[list[int]], batch_size: int = 32, max_new_tokens: int = 128, progress: bool = True,
    sort_by_length: bool = True, cache: str = "dynamic", min_new_tokens: int | None = None,
) -> list[str]:
    """Greedy completions of tokenized prompts, in the prompts' order (batches from `plan_batches`)."""
    batches = plan_batches(prompts, batch_size, sort_by_length)
    outputs = generate_batches(model, tokenizer, template, prompts, batches, max_new_tokens, progress, cache, min_new_tokens)
    return [outputs[i] for i in range(len(prompts))]


def chat_once(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, template: ChatTemplate,
              messages: list[dict[str, Any]], max_new_tokens: int = 256) -> str:
    from .templates import encode_prompt

    return generate(model, tokenizer, template, [encode_prompt(tokenizer, template, messages)], 1, max_new_tokens, progress=False)[0]
