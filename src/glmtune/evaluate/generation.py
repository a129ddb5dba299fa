"""Loading a model folder (merged or adapter) and batched greedy generation with the family's stop tokens.

Batches run longest prompts first. With cache="static" the whole plan shares one preallocated KV cache (one batch
size, one length), so on a GPU generate compiles the decode step once and replays it as a CUDA graph; batch_size
"auto" sizes batches by the free GPU memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from glmtune.logs import bar_options
from glmtune.data.templates import ChatTemplate, stop_token_ids

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
               trust_remote_code: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a merged/full model folder, or an adapter folder on top of its base model.

    `trust_remote_code`: run the folder's own modeling code; only the user's say-so (model.trust_remote_code,
    `glmtune infer --trust-remote-code`), never the folder's marker (glmtune.model.remote_code).
    """
    from glmtune.model.compat import load_kwargs
    from glmtune.model.remote_code import check_remote_code

    model_dir = Path(model_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        base = resolve_base(model_dir, base_override)
        check_remote_code(base, trust_remote_code)
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, **load_kwargs(dtype, trust_remote_code)),
                                          str(model_dir))
        tokenizer_dir = model_dir if (model_dir / "tokenizer_config.json").is_file() else Path(base)
    else:
        check_remote_code(model_dir, trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), **load_kwargs(dtype, trust_remote_code))
        tokenizer_dir = model_dir
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), **load_kwargs(None, trust_remote_code))
    tokenizer.padding_side = "left"  # generation continues from the right edge of every row
    return model.to(device).eval(), tokenizer


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


# batch_size "auto": the memory budget's fraction of free GPU memory, the range it is clipped to, the CPU size.
MEMORY_FRACTION = 0.8
AUTO_LIMITS = (1, 512)
AUTO_CPU_BATCH = 16


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
    within `limits` (the upper one: beyond ~512 rows decoding is compute-bound and a batch only adds latency)."""
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


@torch.no_grad()  # as generate itself: CUDA-graph capture has known trouble with inference-mode tensors
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
