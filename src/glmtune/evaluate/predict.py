"""Evaluate one model on the test split: predictions and their scores, in one process or one per GPU."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from glmtune.evaluate.batching import even_batch_size, plan_batches, resolve_batch_size, resolve_cache, static_shape
from glmtune.evaluate.generation import generate_batches
from glmtune.model.loading import load_trained
from glmtune.io import read_jsonl, write_json, write_jsonl
from glmtune.evaluate.metrics import corpus_scores
from glmtune.data.templates import encode_prompt, get_template, split_for_generation
from glmtune.settings import EvaluateSettings, ModelSettings

log = logging.getLogger(__name__)


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


def agree_on_batch_size(rows: int, world: int, device: str | None) -> int:
    """The smallest rank's batch size on every rank: all ranks must cut the same plan."""
    if world == 1:
        return rows
    import torch
    import torch.distributed as dist

    value = torch.tensor([rows], device=device or "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return int(value.item())


def evaluate_model(
    model_dir: str | Path, test_path: str | Path, predictions_path: str | Path, scores_path: str | Path,
    settings: EvaluateSettings, model: ModelSettings, max_input_length: int, base_model: str | Path | None = None,
) -> dict[str, Any]:
    """Generate an answer for every test conversation's last assistant turn and score it.

    Under torchrun with N ranks (one per GPU), every rank generates every N-th batch of the same plan and rank 0
    writes the files; the predictions are the same as in one process. Other ranks return {}.
    `settings.batch_size` "auto" sizes batches by free GPU memory (glmtune.evaluate.generation.resolve_batch_size).
    `max_input_length` (tokenize.max_input_length) cuts the prompts. `model.trust_remote_code` runs the model
    folder's own code; a folder's marker never does. A static cache with a P-Tuning v2 adapter was refused before
    the run (glmtune.config_rules.check_cache); generation raises if it comes anyway.
    """
    template = get_template(model.template)
    max_new_tokens, cache = settings.max_new_tokens, settings.cache
    rows = list(read_jsonl(test_path))[: settings.max_samples or None]
    if not rows:
        raise ValueError(f"{test_path}: the test split is empty; give a test file or a test ratio above 0")
    rank, world, device = join_process_group()
    loaded, tokenizer = load_trained(model_dir, base_model, device=device, trust_remote_code=model.trust_remote_code)
    cache = resolve_cache(cache, loaded)
    pairs = [split_for_generation(row["conversations"]) for row in rows]
    prompts = [encode_prompt(tokenizer, template, messages, max_input_length) for messages, _ in pairs]
    limit = agree_on_batch_size(resolve_batch_size(settings.batch_size, loaded, prompts, max_new_tokens), world, device)
    rows_per_batch = even_batch_size(len(prompts), limit)
    plan = plan_batches(prompts, rows_per_batch)
    # Every rank gets the whole plan's cache shape, so each compiles the same decode step once.
    shape = static_shape(prompts, plan, max_new_tokens) if cache == "static" else None
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # time generation only, not the ranks' model loading
    start = time.perf_counter()
    mine = generate_batches(loaded, tokenizer, template, prompts, plan[rank::world], max_new_tokens, rank == 0, cache,
                            shape=shape)
    outputs = gather_predictions(mine, world)
    seconds = time.perf_counter() - start
    if rank:
        return {}
    predictions = [outputs[i] for i in range(len(prompts))]
    references = [reference for _, reference in pairs]
    scores = corpus_scores(predictions, references)
    scores["samples_per_second"] = round(len(rows) / seconds, 2)
    scores["processes"] = world
    log.info("%s: %d samples in %.1f s (%.1f samples/s, %d process(es), batches of %d, %s cache): %s",
             model_dir, len(rows), seconds, len(rows) / seconds, world, rows_per_batch, cache, scores)
    write_jsonl(predictions_path, (
        {"prompt": messages[-1]["content"] if messages else "", "reference": ref, "prediction": pred}
        for (messages, ref), pred in zip(pairs, predictions)
    ))
    write_json(scores_path, scores)
    return scores
