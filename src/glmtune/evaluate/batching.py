"""How the test prompts are cut into generation batches: the plan, the one static-cache shape, and batch_size
"auto" sized by free GPU memory."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel

log = logging.getLogger(__name__)


def plan_batches(prompts: Sequence[list[int]], batch_size: int, sort_by_length: bool = True) -> list[list[int]]:
    """Prompt indices cut into batches; sorted longest first, so a batch carries little padding, the largest
    memory peak comes first (an out-of-memory shows at once) and the one short batch is the last.

    Several processes split this one plan batch by batch (`plan[rank::world]`), so every batch, and hence every
    prediction, is the same as in a single process.
    """
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i])) if sort_by_length else list(range(len(prompts)))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def even_batch_size(count: int, limit: int) -> int:
    """The fewest batches of at most `limit` rows, made even: 1,070 prompts at 512 give 357 x 3, not 512 + 512 + 46
    (the static path pads the last batch to full size, so a short one costs a full batch of work)."""
    batches = -(-count // limit)
    return -(-count // batches) if count else limit


@dataclass(frozen=True)
class StaticShape:
    """The one static KV cache of a plan: rows in every batch and tokens per row."""

    rows: int
    length: int


def static_shape(prompts: Sequence[list[int]], plan: Sequence[list[int]], max_new_tokens: int) -> StaticShape:
    """The widest batch and the longest prompt of the whole plan, plus the new tokens: one shape for all batches."""
    return StaticShape(max(len(rows) for rows in plan), max(len(prompts[i]) for rows in plan for i in rows) + max_new_tokens)


def pad_rows(rows: list[int], size: int) -> list[int]:
    """`rows`, then copies of its first row up to `size` rows (the caller throws their outputs away)."""
    if len(rows) > size:
        raise ValueError(f"a batch of {len(rows)} rows does not fit a static cache of {size} rows")
    return rows + [rows[0]] * (size - len(rows))


# batch_size "auto": the memory budget's fraction of free GPU memory, the range it is clipped to, the CPU size.
# The upper limit lets a large GPU take a whole 1,070-prompt test set in one batch (the static cache's decode step
# is then one CUDA graph replayed max_new_tokens times); off CUDA there is no free memory to read, so the size is a fixed 32.
MEMORY_FRACTION = 0.8
AUTO_LIMITS = (1, 2048)
AUTO_CPU_BATCH = 32


def resolve_cache(cache: str, model: Any) -> str:
    """evaluate.cache: "auto" is static on a CUDA device (one compiled decode step) unless the model carries a
    P-Tuning v2 prefix (itself the KV cache), dynamic elsewhere; "static" / "dynamic" as given."""
    if cache != "auto":
        return cache
    prefix = getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False)
    return "static" if next(model.parameters()).device.type == "cuda" and not prefix else "dynamic"


def _config_int(config: Any, *names: str) -> int:
    """The first of `names` the config sets (native and original ChatGLM configs name the same sizes apart)."""
    for name in names:
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise ValueError(f"the model config sets none of {', '.join(names)}")


def bytes_per_row(config: Any, cache_length: int, dtype: torch.dtype, prompt_length: int | None = None) -> int:
    """GPU memory one generated row needs: its KV cache, its share of the prefill's activations, its logits.

    KV: 2 (keys, values) x layers x KV heads x head dim x dtype bytes per token, for `cache_length` tokens.
    Prefill: one layer's transient tensors per prompt token (MLP gate/up output and activation, ~4 x intermediate,
    plus a few hidden-size copies); for GLM-4-9B that is ~3.5x the KV bytes of a token, so it cannot be left out.
    Logits: the last position only, in the model's dtype and in the float32 copy generate takes.
    """
    width = dtype.itemsize
    heads = _config_int(config, "num_attention_heads")
    hidden = _config_int(config, "hidden_size")
    kv_heads = _config_int(config, "num_key_value_heads", "multi_query_group_num", "num_attention_heads")
    head_dim = getattr(config, "head_dim", None) or getattr(config, "kv_channels", None) or hidden // heads
    layers = _config_int(config, "num_hidden_layers", "num_layers")
    kv = 2 * layers * kv_heads * int(head_dim) * width * cache_length
    prefill = (prompt_length or cache_length) * (4 * _config_int(config, "intermediate_size", "ffn_hidden_size") + 4 * hidden) * width
    logits = _config_int(config, "vocab_size", "padded_vocab_size") * (width + 4)
    return kv + prefill + logits


def rows_for_memory(config: Any, cache_length: int, dtype: torch.dtype, free_bytes: int, prompt_length: int | None = None,
                    fraction: float = MEMORY_FRACTION, limits: tuple[int, int] = AUTO_LIMITS) -> int:
    """The batch size that fits `fraction` of `free_bytes`: a multiple of 8 (tensor-core shapes) from 8 rows up,
    within `limits`."""
    rows = int(free_bytes * fraction) // bytes_per_row(config, cache_length, dtype, prompt_length)
    rows = rows // 8 * 8 if rows >= 8 else rows
    return max(limits[0], min(limits[1], rows))


def resolve_batch_size(batch_size: int | str, model: PreTrainedModel, prompts: Sequence[list[int]], max_new_tokens: int) -> int:
    """`batch_size` itself, or for "auto" the rows the free GPU memory holds (AUTO_CPU_BATCH off CUDA); logged."""
    if batch_size != "auto":
        if isinstance(batch_size, str) and not batch_size.isdigit():
            raise ValueError(f"batch_size must be a positive integer or 'auto', not {batch_size!r}")
        return int(batch_size)
    parameter = next(model.parameters())
    if parameter.device.type != "cuda":
        log.info("batch_size auto: %d (fixed off CUDA; device %s)", AUTO_CPU_BATCH, parameter.device)
        return AUTO_CPU_BATCH
    torch.cuda.empty_cache()  # memory the allocator caches but nothing uses counts as free
    free, _ = torch.cuda.mem_get_info(parameter.device)
    longest = max(len(prompt) for prompt in prompts)
    rows = rows_for_memory(model.config, longest + max_new_tokens, parameter.dtype, free, longest)
    log.info("batch_size auto: %d (%.1f GB free after the weights, %d-token cache rows)", rows, free / 1e9,
             longest + max_new_tokens)
    return rows


