"""Benchmarks (not tests): the official demos' recipes beside ours, in one invocation, so ratios are measured.

Both print a Markdown table. GPU figures belong in the README with the date and the device.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from glmtune.evaluate.batching import even_batch_size, plan_batches, resolve_batch_size, static_shape
from glmtune.evaluate.generation import generate_batches
from glmtune.model import loading
from glmtune.io import read_jsonl
from glmtune.data.templates import encode_prompt, get_template, split_for_generation

# Decode steps of each recipe's untimed first batch: enough for torch.compile and the CUDA-graph capture.
WARMUP_TOKENS = 8


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def bench_tokenizer(folder: str | Path, template_name: str) -> PreTrainedTokenizerBase:
    """A saved tokenizer folder, or an official one holding only tokenizer.model (rebuilt by glm_tokenizers)."""
    folder = Path(folder)
    if (folder / "tokenizer_config.json").is_file():
        tokenizer = loading.load_tokenizer(folder, trust_remote_code=False)
    else:
        from glmtune.model.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(folder, template_name)
    tokenizer.padding_side = "left"
    return tokenizer


def bench_model(model: str | Path, tokenizer_dir: str | Path | None,
                template_name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model folder (with its own tokenizer unless `tokenizer_dir` is given), or an architecture config.json
    with random weights (bf16 on a GPU, as bench-train builds them) and the tokenizer of `tokenizer_dir`."""
    if Path(model).is_dir():
        loaded, tokenizer = loading.load_trained(model, trust_remote_code=False)
        return loaded, bench_tokenizer(tokenizer_dir, template_name) if tokenizer_dir else tokenizer
    if not tokenizer_dir:
        raise ValueError(f"{model}: a config.json has no tokenizer; give one with --tokenizer")
    from glmtune.bench.models import random_causal_lm

    return random_causal_lm(model), bench_tokenizer(tokenizer_dir, template_name)


def bench_eval(model_dir: str | Path, test_path: str | Path, template_name: str, samples: int = 1070,
               max_new_tokens: int = 74, demo_batch: int = 16, batch: int | str = 128, cache: str = "static",
               tokenizer_dir: str | Path | None = None, demo_samples: int | None = None) -> str:
    """Generation samples/s: the demo's way (dataset order, batches of `demo_batch`, dynamic cache) vs ours
    (length-sorted batches of at most `batch` rows, an integer or "auto", evened out; with `cache`), on the first
    `samples` test rows.

    `model_dir`: a model folder, or an architecture config.json (random weights) plus `tokenizer_dir`. Every
    sample generates exactly max_new_tokens (random weights never stop), so both do the same work per sample.
    `demo_samples` runs the demo's way on the first that many rows only (its rate does not depend on which rows;
    it is ~10x slower). Each recipe first runs its first batch (ours: the longest) for WARMUP_TOKENS tokens with
    the timed run's own cache shape, so torch.compile and the CUDA-graph capture stay out of the timing.

    GLM-4-9B-chat with random weights on the real AdvertiseGen dev prompts, on one GPU:

        mkdir -p .bench && cp ../shared/data/tokenizers/glm-4-9b-chat/config.json \\
            ../shared/data/tokenizers/glm-4-9b-chat/tokenizer.model ../shared/data/chatglm3/AdvertiseGen_fix_dev.json .bench/
        glmtune bench-eval .bench/config.json .bench/AdvertiseGen_fix_dev.json --tokenizer .bench \\
            --samples 1070 --max-new-tokens 74 --batch 128 --demo-samples 320
    """
    model, tokenizer = bench_model(model_dir, tokenizer_dir, template_name)
    template = get_template(template_name)
    rows = list(read_jsonl(test_path))[:samples]
    prompts = [encode_prompt(tokenizer, template, split_for_generation(r["conversations"])[0]) for r in rows]
    size = even_batch_size(len(prompts), resolve_batch_size(batch, model, prompts, max_new_tokens))
    demo_prompts = prompts[: demo_samples or None]
    ways = [("demo: dataset order", demo_prompts, plan_batches(demo_prompts, demo_batch, False), "dynamic"),
            ("glmtune: length-sorted", prompts, plan_batches(prompts, size), cache)]
    results = []
    for name, chosen, plan, kv in ways:
        shape = static_shape(chosen, plan, max_new_tokens) if kv == "static" else None
        warmup = min(WARMUP_TOKENS, max_new_tokens)
        generate_batches(model, tokenizer, template, chosen, plan[:1], warmup, False, kv, warmup, shape)
        _sync()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        generate_batches(model, tokenizer, template, chosen, plan, max_new_tokens, False, kv, max_new_tokens, shape)
        _sync()
        seconds = time.perf_counter() - start
        row = {"recipe": name, "batch": len(plan[0]), "cache": f"static {shape.rows}x{shape.length}" if shape else kv,
               "samples": len(chosen), "seconds": round(seconds, 2), "samples/s": round(len(chosen) / seconds, 2)}
        if torch.cuda.is_available():
            row["peak GB"] = round(torch.cuda.max_memory_allocated() / 1e9, 1)
        results.append(row)
    results[1]["speed-up"] = f"{results[1]['samples/s'] / results[0]['samples/s']:.1f}x"
    results[0]["speed-up"] = "1.0x"
    return _table(results)


def _train_steps(model: torch.nn.Module, batches: list[tuple[dict[str, Any], int]], steps: int) -> tuple[float, int, int]:
    """(seconds, real tokens, padded tokens) of `steps` optimizer steps of a plain loop."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    device = next(model.parameters()).device
    real = padded = 0
    _sync()
    start = time.perf_counter()
    for batch, tokens in batches[:steps]:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        real += tokens
        padded += batch["input_ids"].numel()
    _sync()
    return time.perf_counter() - start, real, padded


def bench_samples(train: str | Path, tokenizer_dir: str | Path | None = None, template_name: str = "glm4",
                  fmt: str = "advertisegen", cutoff_len: int = 385) -> list[dict[str, list[int]]]:
    """Tokenized training samples: a tokenized split (results/tokenized/train, needs `datasets`), or a raw data file
    of format `fmt` (e.g. the real AdvertiseGen train.json) encoded with the tokenizer of `tokenizer_dir` and the
    template, cut at `cutoff_len` (the demo's 128 + 256 + 1) — no `datasets` needed, as on the lent GPU machine."""
    if Path(train).is_dir():
        from datasets import load_from_disk

        data = load_from_disk(str(train))
        return [{"input_ids": ids, "labels": labels} for ids, labels in zip(data["input_ids"], data["labels"])]
    if not tokenizer_dir:
        raise ValueError(f"{train}: a raw data file needs a tokenizer; give one with --tokenizer")
    from glmtune.data.formats import CONVERTERS
    from glmtune.io import read_records
    from glmtune.data.templates import encode_conversation

    tokenizer, template = bench_tokenizer(tokenizer_dir, template_name), get_template(template_name)
    samples = []
    for _, record in read_records(train):
        ids, labels, _ = encode_conversation(tokenizer, template, CONVERTERS[fmt](record, {}), cutoff_len)
        samples.append({"input_ids": ids, "labels": labels})
    return samples


def bench_train(build_model: Callable[[bool], torch.nn.Module], data: list[dict[str, list[int]]], steps: int = 20,
                demo_batch: int = 4, pack_length: int = 4096, rows: int = 1, peak_tflops: float | None = None) -> str:
    """Real tokens/s, padded tokens/s, peak memory and MFU: demo recipe (padded micro-batches, gradient
    checkpointing) vs glmtune's (packed rows with a per-sample mask, no checkpointing), on `data` (bench_samples).

    build_model(checkpointing) returns a fresh trainable model (e.g. LoRA on a random GLM-4-9B).

    LoRA on q/k/v of GLM-4-9B-chat with random weights on the real AdvertiseGen train lengths, on one GPU:

        mkdir -p .bench && cp ../shared/data/tokenizers/glm-4-9b-chat/config.json \\
            ../shared/data/tokenizers/glm-4-9b-chat/tokenizer.model ../shared/data/AdvertiseGen/train.json .bench/
        glmtune bench-train .bench/config.json .bench/train.json --tokenizer .bench --peak-tflops 989
    """
    from glmtune.train.packing import PackedCollator, pack_rows
    from glmtune.train.collate import PadCollator

    needed = steps + 2  # two warm-up steps

    def collated(collator: Any, rows_of: list[list[dict[str, Any]]]) -> list[tuple[dict[str, Any], int]]:
        return [(collator(group), sum(len(r["input_ids"]) for r in group)) for group in rows_of]

    demo = collated(PadCollator(0), [[data[i] for i in range(s, s + demo_batch)]
                                     for s in range(0, min(len(data) - demo_batch, needed * demo_batch), demo_batch)])
    columns = pack_rows([r["input_ids"] for r in data], [r["labels"] for r in data], pack_length)
    packed = [dict(zip(columns, values)) for values in zip(*columns.values())]
    ours = collated(PackedCollator(0), [[packed[i] for i in range(s, s + rows)]
                                        for s in range(0, min(len(packed) - rows, needed * rows), rows)])
    results = []
    for name, batches, checkpointing in (("demo: padded micro-batch, checkpointing", demo, True),
                                         ("glmtune: packed rows, no checkpointing", ours, False)):
        model = build_model(checkpointing)
        params = sum(p.numel() for p in model.parameters())
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        _train_steps(model, batches, 2)  # warm-up: first shapes, allocator
        seconds, real, padded = _train_steps(model, batches[2:], steps)
        row = {"recipe": name, "steps": min(steps, len(batches) - 2), "real tokens/s": round(real / seconds, 1),
               "padded tokens/s": round(padded / seconds, 1)}
        if torch.cuda.is_available():
            row["peak GB"] = round(torch.cuda.max_memory_allocated() / 1e9, 1)
        if peak_tflops:
            row["MFU"] = round(6 * params * real / seconds / (peak_tflops * 1e12), 3)
        results.append(row)
        del model
        gc.collect()  # peft modules hold reference cycles: free the first model before the next one's peak is read
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    results[1]["ratio"] = f"{results[1]['real tokens/s'] / results[0]['real tokens/s']:.1f}x"
    results[0]["ratio"] = "1.0x"
    return _table(results)
