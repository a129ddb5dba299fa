"""Batched greedy generation with the family's stop tokens (models load through glmtune.model.loading).

Batches run longest prompts first. With cache="static" the whole plan shares one preallocated KV cache (one batch
size, one length), so on a GPU generate compiles the decode step once and replays it as a CUDA graph; batch_size
"auto" sizes batches by the free GPU memory.

DynamicCacheBackend and StaticCacheBackend are the evaluation backends `dynamic` and `static`
(glmtune.evaluate.backend).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from weakref import WeakKeyDictionary

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from glmtune.evaluate.backend import Plan
from glmtune.evaluate.batching import StaticShape, pad_rows, plan_batches, resolve_batch_size, static_shape
from glmtune.logs import bar_options
from glmtune.chat_template import ChatTemplate, decode_answer, stop_token_ids

log = logging.getLogger(__name__)


# One static cache per model, kept between calls: new cache tensors would make CUDA graphs re-record.
_STATIC_CACHES: WeakKeyDictionary[torch.nn.Module, tuple[StaticShape, Any]] = WeakKeyDictionary()


def static_cache(model: PreTrainedModel, shape: StaticShape) -> Any:
    """The model's static cache of `shape`: made on first use, emptied (not re-allocated) on every later one."""
    from transformers import StaticCache  # here: the remote-code environment's old transformers lacks this API

    kept = _STATIC_CACHES.get(model)
    if kept is None or kept[0] != shape:
        _STATIC_CACHES.pop(model, None)  # free the old tensors before allocating new ones
        kept = (shape, StaticCache(config=model.config, max_cache_len=shape.length))
        _STATIC_CACHES[model] = kept
    kept[1].reset()
    return kept[1]


def decode_compile_config(device: torch.device) -> Any:
    """What generate compiles the decode step with: CUDA graphs, static shapes (one cache shape: nothing varies).

    None off CUDA, where generate does not compile (and would warn about a compile config it ignores).
    """
    if device.type != "cuda":
        return None
    from transformers import CompileConfig

    return CompileConfig(fullgraph=False, dynamic=False, mode="reduce-overhead")


@torch.no_grad()  # as generate itself: CUDA-graph capture has known trouble with inference-mode tensors
def only_these_settings(model: PreTrainedModel) -> None:
    """Decode with the settings generate_batches passes and nothing else: transformers fills every setting a call
    leaves out from the model's own generation config (its folder's generation_config.json), so a
    `repetition_penalty`, `no_repeat_ngram_size` or `min_length` there changed the "greedy" predictions, and the
    scores, without a word (an explicit GenerationConfig is filled in from it the same way). Both the model and,
    for an adapter, its base get an empty one."""
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig()
    if hasattr(model, "get_base_model"):  # a peft model generates through its base
        model.get_base_model().generation_config = GenerationConfig()


def generate_batches(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, template: ChatTemplate,
    prompts: Sequence[list[int]], batches: Sequence[list[int]], max_new_tokens: int = 128, progress: bool = True,
    cache: str = "dynamic", min_new_tokens: int | None = None, shape: StaticShape | None = None,
    compile_config: Any = None,
) -> dict[int, str]:
    """Greedy completions of the prompts in `batches` (lists of indices into `prompts`), by index.

    Rows are left-padded. `cache="static"` runs every batch in one preallocated KV cache of `shape` (default: that
    of `batches`; processes sharing a plan pass the whole plan's), short batches padded with copies of a row, so
    on a GPU generate compiles the decode step once (CUDA graphs) and replays it for every batch.
    `compile_config` replaces decode_compile_config's.
    """
    stops = stop_token_ids(tokenizer, template)
    only_these_settings(model)
    outputs: dict[int, str] = {}
    device = next(model.parameters()).device
    options: dict[str, Any] = {"min_new_tokens": min_new_tokens} if min_new_tokens else {}
    static = cache == "static" and len(batches) > 0
    if static and getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
        # Decided before the run (glmtune.config_rules.check_cache): P-Tuning v2 feeds its prefix as the KV cache itself.
        raise ValueError("cache: static cannot hold a P-Tuning v2 (prefix) adapter's prefix, which is itself the KV cache; "
                         "use cache: dynamic (the workflow refuses evaluate.cache: static with train.method: ptuning)")
    if static:
        shape = shape or static_shape(prompts, batches, max_new_tokens)
        compile_config = compile_config or decode_compile_config(device)
        if compile_config is not None:
            options["compile_config"] = compile_config
    for rows in tqdm(batches, desc="generate", **{**bar_options(), "disable": not progress}):
        fed = rows
        if static and shape is not None:
            fed = pad_rows(rows, shape.rows)
            if max(len(prompts[i]) for i in rows) + max_new_tokens > shape.length:
                raise ValueError(f"a prompt plus {max_new_tokens} new tokens exceeds the static cache ({shape.length})")
            options["past_key_values"] = static_cache(model, shape)
        batch = tokenizer.pad({"input_ids": [prompts[i] for i in fed]}, return_tensors="pt").to(device)
        generated = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id, cache_implementation=None if cache in ("dynamic", "static") else cache,
            **options,
        )
        # Only the real rows: the copies that pad a short batch are never decoded.
        for row, ids in zip(rows, generated[: len(rows), batch["input_ids"].shape[1] :]):
            outputs[row] = decode_answer(tokenizer, ids.tolist())
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


class DynamicCacheBackend:
    """transformers' generate on a loaded model, batches as planned, a new (dynamic) KV cache per batch."""

    cache = "dynamic"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, template: ChatTemplate,
                 batch_size: int | str = "auto", progress: bool = True) -> None:
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.batch_size, self.progress = batch_size, progress

    def batch_limit(self, prompts: Sequence[list[int]], max_new_tokens: int) -> int:
        """evaluate.batch_size, or for "auto" the rows the free GPU memory holds (batching.resolve_batch_size)."""
        return resolve_batch_size(self.batch_size, self.model, prompts, max_new_tokens)

    def generate(self, plan: Plan, part: slice = slice(None)) -> dict[int, str]:
        # Every process of a split gets the whole plan's cache shape, so each compiles the same decode step once.
        shape = static_shape(plan.prompts, plan.batches, plan.max_new_tokens) if self.cache == "static" else None
        return generate_batches(self.model, self.tokenizer, self.template, plan.prompts, plan.batches[part],
                                plan.max_new_tokens, self.progress, self.cache, shape=shape)


class StaticCacheBackend(DynamicCacheBackend):
    """The same with one preallocated static KV cache for the whole plan (a CUDA graph on a GPU; see above)."""

    cache = "static"
