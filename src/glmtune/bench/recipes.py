"""Benchmarks (not tests): the official demos' recipes beside ours, in one invocation, so ratios are measured.

Both print a Markdown table. GPU figures belong in the README with the date and the device.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from glmtune.evaluate.batching import even_batch_size, plan_batches, resolve_batch_size, resolve_cache, static_shape
from glmtune.evaluate.generation import generate_batches
from glmtune.model import loading
from glmtune.io import read_jsonl
from glmtune.chat_template import ChatTemplate, encode_prompt, get_template, split_for_generation
from glmtune.family import DEFAULT_FAMILY
from glmtune.inference import BadRequest, detect_template, template_problem

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
        from glmtune.model.tokenizers import tokenizer_from_model_file

        tokenizer = tokenizer_from_model_file(folder, template_name)
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


def bench_eval(model_dir: str | Path, test_path: str | Path, template_name: str | None, samples: int = 1070,
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
    model, tokenizer = bench_model(model_dir, tokenizer_dir, template_name or DEFAULT_FAMILY)
    cache = resolve_cache(cache, model)  # auto: static on a GPU, as the evaluate stage resolves it
    template = bench_template(tokenizer, template_name)
    rows = list(read_jsonl(test_path))[:samples]
    prompts = [encode_prompt(tokenizer, template, split_for_generation(conversation(test_path, number, row))[0])
               for number, row in enumerate(rows, 1)]
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


def bench_template(tokenizer: PreTrainedTokenizerBase, template_name: str | None) -> ChatTemplate:
    """--template, checked against the tokenizer, or the tokenizer's family detected as `glmtune infer` does."""
    template = get_template(template_name) if template_name else detect_template(tokenizer)
    if problem := template_problem(tokenizer, template, template_name is not None):
        raise BadRequest(problem)
    return template


def conversation(test_path: str | Path, number: int, row: Any) -> list[dict[str, Any]]:
    """A test row's conversation (a test split's line); another kind of line is named, not a KeyError."""
    if not isinstance(row, dict) or not isinstance(row.get("conversations"), list):
        raise BadRequest(f"{test_path}, line {number}: not a test split's line ({{\"conversations\": [...]}}, as "
                         "results/splits/test.jsonl holds); a predictions.jsonl or --input file of glmtune infer is not one")
    return row["conversations"]


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
    from glmtune.data.records import read_records
    from glmtune.chat_template import encode_conversation

    tokenizer, template = bench_tokenizer(tokenizer_dir, template_name), get_template(template_name)
    samples = []
    for _, record in read_records(train):
        ids, labels, _ = encode_conversation(tokenizer, template, CONVERTERS[fmt](record, {}), cutoff_len)
        samples.append({"input_ids": ids, "labels": labels})
    return samples


def long_samples(data: list[dict[str, list[int]]], length: int) -> list[dict[str, list[int]]]:
    """Consecutive samples joined into samples of exactly `length` tokens (the memory case: cutoff_len 2048, one
    sample a step, needs samples that long; AdvertiseGen's are ~117 tokens). The rest at the end is left out."""
    ids = [t for row in data for t in row["input_ids"]]
    labels = [t for row in data for t in row["labels"]]
    return [{"input_ids": ids[s : s + length], "labels": labels[s : s + length]}
            for s in range(0, len(ids) - length + 1, length)]


def arch_model_shapes(arch: str | Path) -> list[torch.Tensor]:
    """The architecture's parameters as meta tensors (no memory): for counting them."""
    from transformers import AutoModelForCausalLM

    from glmtune.bench.models import arch_config

    with torch.device("meta"):
        return list(AutoModelForCausalLM.from_config(arch_config(arch)).parameters())


def _median_second_half(values: list[float]) -> float:
    half = sorted(values[len(values) // 2 :])
    return half[len(half) // 2] if half else float("nan")


def bench_train(arch: str | Path, data: list[dict[str, list[int]]], tokenizer: PreTrainedTokenizerBase,
                recipes: dict[str, tuple[dict[str, Any], int | None]], steps: int = 30, logging_steps: int = 5, workdir: str | Path | None = None,
                peak_tflops: float | None = None) -> str:
    """The train stage itself (glmtune.train.trainer.train_model) on random weights of the architecture `arch`
    (only the weight loading is replaced), once per recipe (name -> the validated train section it runs with and the
sample length it joins the samples to, None to keep them), on `data`; the first recipe is the ratio's base.

    Tokens/s is the stage's own log figure (real tokens, the median of the second half of the logged intervals);
    the first interval (compilation, first shapes) is shown apart. Peak GB is the stage's summary
    (torch.cuda.max_memory_allocated). See glmtune.bench.stage for the recipes of a config.
    """
    import tempfile
    from unittest import mock

    from glmtune.bench.models import arch_config, random_weights
    from glmtune.tokenize.splits import _save
    from glmtune.io import read_jsonl
    from glmtune.model.tokenizer_files import save_tokenizer
    from glmtune.settings import TrainSettings
    from glmtune.train import trainer

    root = Path(workdir or tempfile.mkdtemp(prefix="bench-train-"))
    model_dir = root / "model"
    arch_config(arch).save_pretrained(model_dir)
    save_tokenizer(tokenizer, model_dir)
    results = []
    for name, (section, sample_length) in recipes.items():
        settings = TrainSettings.from_config(section)
        rows = long_samples(data, sample_length) if sample_length else data
        split = root / name
        _save({"input_ids": [r["input_ids"] for r in rows], "labels": [r["labels"] for r in rows]}, split / "train")
        _save({"input_ids": [], "labels": []}, split / "validation")  # no validation: the timing is training's
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with mock.patch.object(trainer, "load_model", random_weights):
            summary = trainer.train_model(split / "train", split / "validation", model_dir, split / "adapter",
                                          split / "log.jsonl", split / "loss.png", split / "checkpoints", settings,
                                          trust_remote_code=False, family="glm4")
        seconds = time.perf_counter() - start
        logged = [row for row in read_jsonl(split / "log.jsonl") if "tokens_per_second" in row]
        rate = _median_second_half([row["tokens_per_second"] for row in logged])
        row = {"recipe": name, "steps": summary["steps"], "rows a step": settings.batch_size,
               "real tokens/s": round(rate, 1), "first interval s": logged[0]["elapsed_s"] if logged else "?",
               "stage s": round(seconds, 1)}
        if torch.cuda.is_available():
            row["peak GB"] = summary.get("peak_gpu_memory_gb", "?")
        if peak_tflops:  # 6 x all parameters x tokens/s (attention's own FLOPs left out)
            params = sum(p.numel() for p in arch_model_shapes(arch))
            row["MFU"] = round(6 * params * rate / (peak_tflops * 1e12), 3)
        results.append(row)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    base = results[0]["real tokens/s"]
    for row in results:
        row["ratio"] = f"{row['real tokens/s'] / base:.1f}x" if base else "?"
    return _table(results)
