"""Benchmarks (not tests): the official demos' recipes beside ours, in one invocation, so ratios are measured.

Both print a Markdown table. GPU figures belong in the README with the date and the device.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from datasets import load_from_disk

from .generation import generate, load_model
from .io import read_jsonl
from .packing import PackedCollator, pack_dataset
from .templates import encode_prompt, get_template, split_for_generation
from .training import PadCollator


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def bench_eval(model_dir: str | Path, test_path: str | Path, template_name: str, samples: int = 1070,
               max_new_tokens: int = 74, demo_batch: int = 16, batch: int = 128, cache: str = "static") -> str:
    """Generation samples/s: the demo's way (dataset order, small batches) vs length-sorted big batches.

    Every sample generates exactly max_new_tokens (random weights never stop), so both do the same work.
    """
    model, tokenizer = load_model(model_dir)
    template = get_template(template_name)
    rows = list(read_jsonl(test_path))[:samples]
    prompts = [encode_prompt(tokenizer, template, split_for_generation(r["conversations"])[0]) for r in rows]
    ways = [("demo: dataset order", demo_batch, False, "dynamic"), ("glmtune: length-sorted", batch, True, cache)]
    generate(model, tokenizer, template, prompts[:batch], batch, 4, progress=False, cache=cache)  # warm-up
    results = []
    for name, size, sort, kv in ways:
        _sync()
        start = time.perf_counter()
        generate(model, tokenizer, template, prompts, size, max_new_tokens, progress=False, sort_by_length=sort,
                 cache=kv, min_new_tokens=max_new_tokens)
        _sync()
        seconds = time.perf_counter() - start
        results.append({"recipe": name, "batch": size, "cache": kv, "samples": len(prompts),
                        "seconds": round(seconds, 2), "samples/s": round(len(prompts) / seconds, 2)})
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


def bench_train(build_model: Callable[[bool], torch.nn.Module], train_dir: str | Path, steps: int = 20,
                demo_batch: int = 4, pack_length: int = 4096, rows: int = 1, peak_tflops: float | None = None) -> str:
    """Real tokens/s, padded tokens/s, peak memory and MFU: demo recipe (padded micro-batches, gradient
    checkpointing) vs glmtune's (packed rows with a per-sample mask, no checkpointing).

    build_model(checkpointing) returns a fresh trainable model (e.g. LoRA on a random GLM-4-9B).
    """
    data = load_from_disk(str(train_dir))
    needed = steps + 2  # two warm-up steps

    def collated(collator: Any, rows_of: list[list[dict[str, Any]]]) -> list[tuple[dict[str, Any], int]]:
        return [(collator(group), sum(len(r["input_ids"]) for r in group)) for group in rows_of]

    demo = collated(PadCollator(0), [[data[i] for i in range(s, s + demo_batch)]
                                     for s in range(0, min(len(data) - demo_batch, needed * demo_batch), demo_batch)])
    packed = pack_dataset(data, pack_length)
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
    results[1]["ratio"] = f"{results[1]['real tokens/s'] / results[0]['real tokens/s']:.1f}x"
    results[0]["ratio"] = "1.0x"
    return _table(results)
