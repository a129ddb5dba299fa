"""Evaluate a model on the test split (predictions + metrics) and compare fine-tuned with base."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from .generation import generate_batches, load_model, plan_batches
from .io import read_jsonl, write_json, write_jsonl
from .metrics import corpus_scores
from .templates import encode_prompt, get_template, split_for_generation

log = logging.getLogger(__name__)
METRIC_LABELS = {
    "rouge-1": "ROUGE-1 (F×100, jieba)", "rouge-2": "ROUGE-2 (F×100, jieba)", "rouge-l": "ROUGE-L (F×100, jieba)",
    "bleu-4": "BLEU-4 (ChatGLM3 demo: jieba, 0–1)", "bleu-4-char": "BLEU-4 (LLaMA-Factory: characters, ×100)",
}


def join_process_group() -> tuple[int, int, str | None]:
    """(rank, world size, device) in a process torchrun started with several ranks; (0, 1, None) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, None
    import torch
    import torch.distributed as dist

    device = "cpu"
    if torch.cuda.is_available():
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device != "cpu" else "gloo")
    return dist.get_rank(), world, device


def gather_predictions(part: dict[int, str], world: int) -> dict[int, str]:
    """Every rank's predictions, merged (the same on every rank)."""
    if world == 1:
        return part
    import torch.distributed as dist

    parts: list[dict[int, str] | None] = [None] * world
    dist.all_gather_object(parts, part)
    return {index: text for piece in parts for index, text in (piece or {}).items()}


def evaluate_model(
    model_dir: str | Path, test_path: str | Path, predictions_path: str | Path, scores_path: str | Path,
    template_name: str, max_samples: int | None, batch_size: int, max_new_tokens: int, max_input_length: int,
    base_model: str | Path | None = None, cache: str = "dynamic",
) -> dict[str, Any]:
    """Generate an answer for every test conversation's last assistant turn and score it.

    Under torchrun with N ranks (one per GPU), every rank generates every N-th batch of the same plan and rank 0
    writes the files; the predictions are the same as in one process. Other ranks return {}.
    """
    template = get_template(template_name)
    rows = list(read_jsonl(test_path))[: max_samples or None]
    if not rows:
        raise ValueError(f"{test_path}: the test split is empty; give a test file or a test ratio above 0")
    rank, world, device = join_process_group()
    model, tokenizer = load_model(model_dir, base_model, device=device)
    pairs = [split_for_generation(row["conversations"]) for row in rows]
    prompts = [encode_prompt(tokenizer, template, messages, max_input_length) for messages, _ in pairs]
    plan = plan_batches(prompts, batch_size)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # time generation only, not the ranks' model loading
    start = time.perf_counter()
    mine = generate_batches(model, tokenizer, template, prompts, plan[rank::world], max_new_tokens, rank == 0, cache)
    outputs = gather_predictions(mine, world)
    seconds = time.perf_counter() - start
    if rank:
        return {}
    predictions = [outputs[i] for i in range(len(prompts))]
    references = [reference for _, reference in pairs]
    scores = corpus_scores(predictions, references)
    scores["samples_per_second"] = round(len(rows) / seconds, 2)
    scores["processes"] = world
    log.info("%s: %d samples in %.1f s (%.1f samples/s, %d process(es)): %s",
             model_dir, len(rows), seconds, len(rows) / seconds, world, scores)
    write_jsonl(predictions_path, (
        {"prompt": messages[-1]["content"] if messages else "", "reference": ref, "prediction": pred}
        for (messages, ref), pred in zip(pairs, predictions)
    ))
    write_json(scores_path, scores)
    return scores


def compare(scores: dict[str, dict[str, Any]], metrics_path: str | Path, table_path: str | Path) -> None:
    """metrics.json with every model's scores, and a Markdown table a person reads first."""
    write_json(metrics_path, scores)
    names = list(scores)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label in METRIC_LABELS.items():
        lines.append(f"| {label} | " + " | ".join(f"{scores[n][key]:.4g}" for n in names) + " |")
    for key in ("num_samples", "num_empty_predictions", "samples_per_second"):
        lines.append(f"| {key} | " + " | ".join(str(scores[n].get(key, "")) for n in names) + " |")
    Path(table_path).write_text("\n".join(lines) + "\n", encoding="utf-8")
