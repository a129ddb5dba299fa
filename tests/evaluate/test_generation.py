"""Batched generation on the tiny model: the static-cache path (one cache, one compiled decode step, padded last
batch) gives the dynamic path's predictions in the prompts' order; batch_size "auto" from a memory budget."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from conftest import shared_data
from transformers import cache_utils

from glmtune.bench.models import arch_config
from glmtune.evaluate.predict import evaluate_model
from helpers.settings import evaluate_settings, model_settings, tokenize_settings
from glmtune.evaluate.batching import (
    AUTO_CPU_BATCH, bytes_per_row, even_batch_size, plan_batches, resolve_batch_size, rows_for_memory, static_shape,
)
from glmtune.evaluate.generation import _STATIC_CACHES, decode_compile_config, generate, generate_batches
from glmtune.io import read_jsonl
from glmtune.model.loading import load_trained
from glmtune.chat_template import encode_prompt, get_template, split_for_generation

TEMPLATE = get_template("glm4")
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def tuned(small_run: dict[str, Path]) -> tuple[Any, Any, list[list[int]]]:
    """The fine-tuned tiny model (adapter on its base) and 11 test prompts: batches of 4 leave a short last one."""
    model, tokenizer = load_trained(small_run["adapter"], trust_remote_code=False)
    rows = list(read_jsonl(small_run["test"]))[:11]
    prompts = [encode_prompt(tokenizer, TEMPLATE, split_for_generation(r["conversations"])[0]) for r in rows]
    return model, tokenizer, prompts


@pytest.fixture()
def allocations(monkeypatch: pytest.MonkeyPatch) -> list[torch.Size]:
    """The key shapes of every static-cache layer allocation (StaticLayer.lazy_initialization), whoever makes it."""
    made: list[torch.Size] = []
    real = cache_utils.StaticLayer.lazy_initialization

    def counting(self: Any, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        made.append(key_states.shape)
        real(self, key_states, value_states)

    monkeypatch.setattr(cache_utils.StaticLayer, "lazy_initialization", counting)
    return made


@pytest.fixture()
def generate_calls(tuned: tuple[Any, Any, list[list[int]]], monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What every model.generate call was given (rows fed, the cache object)."""
    model = tuned[0]
    calls: list[dict[str, Any]] = []
    real = model.generate

    def spy(**kwargs: Any) -> torch.Tensor:
        calls.append({"rows": kwargs["input_ids"].shape[0], "cache": kwargs.get("past_key_values")})
        return real(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    return calls


def test_plan_runs_longest_first_and_leaves_one_short_batch_last(tuned: tuple[Any, Any, list[list[int]]]) -> None:
    prompts = tuned[2]
    plan = plan_batches(prompts, 4)
    assert [len(rows) for rows in plan] == [4, 4, 3]
    lengths = [len(prompts[i]) for rows in plan for i in rows]
    assert lengths == sorted(lengths, reverse=True) and len(set(lengths)) > 1
    assert sorted(i for rows in plan for i in rows) == list(range(len(prompts)))
    shape = static_shape(prompts, plan, NEW_TOKENS)
    assert (shape.rows, shape.length) == (4, max(map(len, prompts)) + NEW_TOKENS)


def test_batches_are_evened_out_so_little_padding_is_run() -> None:
    assert even_batch_size(1070, 512) == 357  # 357 x 3 rows, 1 padded, instead of 512 + 512 + 46 (466 padded)
    assert even_batch_size(1070, 128) == 119  # 9 batches either way
    assert (even_batch_size(11, 4), even_batch_size(8, 16), even_batch_size(0, 16)) == (4, 8, 16)


def test_static_equals_dynamic_in_prompt_order_with_one_cache(
    tuned: tuple[Any, Any, list[list[int]]], allocations: list[torch.Size], generate_calls: list[dict[str, Any]],
) -> None:
    model, tokenizer, prompts = tuned
    _STATIC_CACHES.pop(model, None)  # count from nothing, whichever test ran before
    one_by_one = [generate(model, tokenizer, TEMPLATE, [p], 1, NEW_TOKENS, progress=False)[0] for p in prompts]
    dynamic = generate(model, tokenizer, TEMPLATE, prompts, 4, NEW_TOKENS, progress=False)
    assert not allocations  # the dynamic path makes no static cache
    generate_calls.clear()
    static = generate(model, tokenizer, TEMPLATE, prompts, 4, NEW_TOKENS, progress=False, cache="static")
    assert static == dynamic == one_by_one  # each prompt's own answer, in the prompts' order
    assert len(set(static)) > 1  # distinct answers, so a shuffled order would show
    # One allocation per layer for the whole plan, of the plan's shape; every batch fed 4 rows into that one cache.
    layers = model.config.num_hidden_layers
    assert len(allocations) == layers and {shape[0] for shape in allocations} == {4}
    assert [call["rows"] for call in generate_calls] == [4, 4, 4]
    assert len({id(call["cache"]) for call in generate_calls}) == 1
    assert generate_calls[0]["cache"].layers[0].max_cache_len == max(map(len, prompts)) + NEW_TOKENS


def test_padded_rows_are_never_decoded(tuned: tuple[Any, Any, list[list[int]]], monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer, prompts = tuned
    plan = plan_batches(prompts, 4)
    decoded: list[int] = []
    real = tokenizer.decode

    def counting(ids: torch.Tensor, **kwargs: Any) -> str:
        decoded.append(len(ids))
        return real(ids, **kwargs)

    monkeypatch.setattr(tokenizer, "decode", counting)
    outputs = generate_batches(model, tokenizer, TEMPLATE, prompts, plan, NEW_TOKENS, False, "static")
    assert sorted(outputs) == list(range(11)) and len(decoded) == 11  # 12 rows ran; the copy was not decoded


def test_ranks_sharing_a_plan_share_one_cache_shape(
    tuned: tuple[Any, Any, list[list[int]]], allocations: list[torch.Size],
) -> None:
    """evaluate_model's split: rank r runs plan[r::world] with the whole plan's shape; together they give the same."""
    model, tokenizer, prompts = tuned
    plan = plan_batches(prompts, 4)
    shape = static_shape(prompts, plan, NEW_TOKENS)
    whole = generate_batches(model, tokenizer, TEMPLATE, prompts, plan, NEW_TOKENS, False, "dynamic")
    _STATIC_CACHES.pop(model, None)
    parts: dict[int, str] = {}
    for rank in range(2):  # rank 1 alone holds the short batch; it still fills 4-row batches of the same length
        parts |= generate_batches(model, tokenizer, TEMPLATE, prompts, plan[rank::2], NEW_TOKENS, False, "static", shape=shape)
    assert parts == whole
    assert len(allocations) == model.config.num_hidden_layers and {a[0] for a in allocations} == {4}  # one 4-row cache


def test_decode_step_is_compiled_once_for_the_whole_plan(tuned: tuple[Any, Any, list[list[int]]]) -> None:
    """generate compiles only on CUDA; `_compile_all_devices` makes it compile here with a counting backend, and
    the rest of the CUDA compile settings, so a recompile for a later batch would show as a second graph."""
    model, tokenizer, prompts = tuned
    graphs: list[int] = []

    def backend(graph: torch.fx.GraphModule, inputs: list[Any]) -> Callable[..., Any]:
        graphs.append(len(inputs))
        return graph.forward

    settings = dataclasses.replace(decode_compile_config(torch.device("cuda")), backend=backend, mode="default")
    settings._compile_all_devices = True
    plan = plan_batches(prompts, 4)
    shape = static_shape(prompts, plan, NEW_TOKENS)
    torch._dynamo.reset()
    try:
        first = generate_batches(model, tokenizer, TEMPLATE, prompts, plan[:1], NEW_TOKENS, False, "static", shape=shape,
                                 compile_config=settings)
        compiled = len(graphs)
        outputs = generate_batches(model, tokenizer, TEMPLATE, prompts, plan, NEW_TOKENS, False, "static", shape=shape,
                                   compile_config=settings)
    finally:
        torch._dynamo.reset()
    assert compiled >= 1 and len(graphs) == compiled  # no recompilation for the other batches, short one included
    assert outputs == generate_batches(model, tokenizer, TEMPLATE, prompts, plan, NEW_TOKENS, False, "dynamic")
    assert all(first[i] == outputs[i] for i in first)


def test_evaluation_with_auto_batches_and_static_cache_matches_dynamic(small_run: dict[str, Path], tmp_path: Path) -> None:
    scores = {}
    for cache in ("dynamic", "static"):
        scores[cache] = evaluate_model(small_run["adapter"], small_run["test"], tmp_path / f"{cache}.jsonl",
                                       tmp_path / f"{cache}.json",
                                       evaluate_settings(max_samples=19, batch_size="auto", max_new_tokens=16, cache=cache),
                                       model_settings(template="glm4"), tokenize_settings(max_input_length=64))
    predictions = [[row["prediction"] for row in read_jsonl(tmp_path / f"{cache}.jsonl")] for cache in scores]
    assert predictions[0] == predictions[1] and len(predictions[0]) == 19  # auto: at most 16 rows, so 10 + 9
    assert scores["static"]["rouge-l"] == scores["dynamic"]["rouge-l"]


def test_auto_batch_size_is_the_fixed_fallback_on_cpu(tuned: tuple[Any, Any, list[list[int]]]) -> None:
    model, _, prompts = tuned
    assert next(model.parameters()).device.type == "cpu"
    assert resolve_batch_size("auto", model, prompts, NEW_TOKENS) == AUTO_CPU_BATCH
    assert resolve_batch_size(24, model, prompts, NEW_TOKENS) == 24
    with pytest.raises(ValueError, match="'auto'"):
        resolve_batch_size("max", model, prompts, NEW_TOKENS)


def glm4_configs() -> Iterator[Any]:
    """GLM-4-9B-chat's official config.json, read as glmtune builds it (GlmConfig) and as the raw original fields."""
    path = shared_data("tokenizers/glm-4-9b-chat/config.json")
    yield arch_config(path)
    yield SimpleNamespace(**json.loads(path.read_text(encoding="utf-8")))  # num_layers, multi_query_group_num, ...


@pytest.mark.parametrize("form", ["native", "original"])
def test_memory_budget_of_glm4_9b_by_hand(form: str) -> None:
    config = list(glm4_configs())[form == "original"]
    # KV cache: 2 (K and V) x 40 layers x 2 KV groups x 128 head dim x 2 bytes (bf16) = 40,960 bytes a token.
    kv = 40_960 * 200
    # Prefill, per prompt token: (4 x 13,696 intermediate + 4 x 4,096 hidden) x 2 bytes = 142,336 bytes.
    prefill = 142_336 * 126
    # Last-position logits: 151,552 vocabulary x (2 bytes bf16 + 4 bytes float32 copy) = 909,312 bytes.
    logits = 909_312
    assert kv + prefill + logits == 27_035_648
    assert bytes_per_row(config, 200, torch.bfloat16, 126) == 27_035_648
    # 0.8 x 10 GB / 27,035,648 = 295.9 rows -> 295 -> a multiple of 8: 288.
    assert rows_for_memory(config, 200, torch.bfloat16, 10_000_000_000, 126) == 288
    assert rows_for_memory(config, 200, torch.bfloat16, 200_000_000_000, 126) == 2048  # clipped above (AUTO_LIMITS)
    assert rows_for_memory(config, 200, torch.bfloat16, 50_000_000, 126) == 1  # no rounding below 8 rows
    # float32 doubles every term but the logits' float32 copy.
    assert bytes_per_row(config, 200, torch.float32, 126) == 2 * (kv + prefill) + 151_552 * 8


def test_predictions_do_not_follow_the_model_folders_generation_settings(
        tuned: tuple[Any, Any, list[list[int]]]) -> None:
    """A generation_config.json with a repetition penalty (or an n-gram ban, a minimum length) changed the greedy
    predictions before: transformers fills what a call leaves out from the model's own generation config."""
    from transformers import GenerationConfig

    model, tokenizer, prompts = tuned
    plan = plan_batches(prompts[:4], 4)
    plain = generate_batches(model, tokenizer, TEMPLATE, prompts, plan, NEW_TOKENS, False)
    alone = generate_batches(model, tokenizer, TEMPLATE, prompts, [[0]], NEW_TOKENS, False)[0]
    for holder in (model, model.get_base_model()):
        holder.generation_config = GenerationConfig(repetition_penalty=5.0, no_repeat_ngram_size=1, min_length=30)
    nudged = model.generate(torch.tensor([prompts[0]]), max_new_tokens=NEW_TOKENS, do_sample=False)
    assert tokenizer.decode(nudged[0, len(prompts[0]):], skip_special_tokens=True).strip() != alone  # they do act
    assert generate_batches(model, tokenizer, TEMPLATE, prompts, plan, NEW_TOKENS, False) == plain
    assert generate_batches(model, tokenizer, TEMPLATE, prompts, [[0]], NEW_TOKENS, False)[0] == alone
