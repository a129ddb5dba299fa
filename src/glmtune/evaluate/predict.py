"""Evaluate one model on the test split: prompts -> a generation backend's texts -> scores -> files, in one process
or one per GPU (glmtune.evaluate.ranks)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from glmtune.chat_template import get_template, reference_answer, split_for_generation
from glmtune.config_rules import model_positions, positions_problem
from glmtune.evaluate.backend import in_order, make_backend, make_plan
from glmtune.evaluate.batching import resolve_cache
from glmtune.evaluate.metrics import corpus_scores
from glmtune.evaluate.prompts import check_answer_room, generation_prompts
from glmtune.evaluate.ranks import RankSplit, join_process_group
from glmtune.io import read_jsonl, write_json, write_jsonl
from glmtune.model.loading import load_trained
from glmtune.settings import EvaluateSettings, ModelSettings, TokenizeSettings
from glmtune.tokenize.splits import check_written
from glmtune.train.holder import check_not_superseded, holding

log = logging.getLogger(__name__)


@holding(lambda arguments: Path(arguments["predictions_path"]).parent, "an evaluation")  # one evaluation per output
def evaluate_model(
    model_dir: str | Path, test_path: str | Path, predictions_path: str | Path, scores_path: str | Path,
    settings: EvaluateSettings, model: ModelSettings, tokenize: TokenizeSettings, base_model: str | Path | None = None,
) -> dict[str, Any]:
    """Generate an answer for every test conversation's last assistant turn and score it.

    The backend is `settings.cache`'s (glmtune.evaluate.backend.BACKENDS; "auto" resolved by resolve_cache). Under
    torchrun with N ranks (one per GPU), every rank generates every N-th batch of the same plan and rank 0 writes
    the files; the predictions are the same as in one process. Other ranks return {}.
    `settings.batch_size` "auto" sizes batches by free GPU memory (glmtune.evaluate.batching.resolve_batch_size).
    `tokenize` limits the prompts (glmtune.evaluate.prompts: cut as the demos cut them, counted, refused when more than
    its max_truncated_ratio would be cut). `model.trust_remote_code` runs the model
    folder's own code; a folder's marker never does. A static cache with a P-Tuning v2 adapter was refused before
    the run (glmtune.config_rules.check_cache); generation raises if it comes anyway.
    """
    template = get_template(model.template)
    max_new_tokens, cache = settings.max_new_tokens, settings.cache
    every_row = list(read_jsonl(test_path))
    rows = every_row[: settings.max_samples or None]
    if not rows:
        raise ValueError(f"{test_path}: the test split is empty; give a test file or a test ratio above 0")
    if len(rows) < len(every_row):  # the split is shuffled: its first rows are a random sample of it
        log.info("%s: evaluating the first %d of its %d test conversations (evaluate.max_samples)", test_path,
                 len(rows), len(every_row))
    for row in rows:  # before loading anything: a test conversation the template cannot lay out is refused
        check_written(template, row, test_path, stage="evaluate")
    rank, world, device = join_process_group()
    loaded, tokenizer = load_trained(model_dir, base_model, device=device, trust_remote_code=model.trust_remote_code)
    cache = resolve_cache(cache, loaded)
    if problem := positions_problem(model_positions(loaded.config.to_dict()), tokenize, max_new_tokens):
        raise ValueError(f"{model_dir}: {problem}")
    pairs = [split_for_generation(row["conversations"]) for row in rows]
    prompts, cut = generation_prompts(tokenizer, template, [messages for messages, _ in pairs], tokenize, test_path)
    references = [reference_answer(tokenizer, template, answer) for _, answer in pairs]
    answers_longer = check_answer_room(tokenizer, template, [answer for _, answer in pairs], settings, test_path)
    backend = make_backend(cache, loaded, tokenizer, template, settings.batch_size, progress=rank == 0)
    if world > 1:
        backend = RankSplit(backend, rank, world, device)
    plan = make_plan(backend, prompts, max_new_tokens)
    start = time.perf_counter()
    outputs = backend.generate(plan)
    seconds = time.perf_counter() - start
    if rank:
        return {}
    predictions = in_order(outputs, len(prompts))
    scores = corpus_scores(predictions, references)
    scores["samples_per_second"] = round(len(rows) / seconds, 2)
    scores["processes"] = world
    scores["prompts_cut"] = cut
    scores["answers_longer_than_max_new_tokens"] = answers_longer
    log.info("%s: %d samples in %.1f s (%.1f samples/s, %d process(es), batches of %d, %s cache): %s",
             model_dir, len(rows), seconds, len(rows) / seconds, world, plan.batch_size, cache, scores)
    if empty := scores["num_empty_predictions"]:  # scored 0 each: a model that stops at once looks merely weak
        log.warning("%s: %d of %d predictions are empty (the model wrote its end token at once, or only whitespace); "
                    "each scores 0 (the comparison's 'empty predictions' column)", model_dir, empty, len(rows))
    check_not_superseded(Path(predictions_path).parent)  # a newer evaluation refused meanwhile: other settings
    write_jsonl(predictions_path, (
        {"messages": messages, "reference": ref, "prediction": pred}  # a `glmtune infer --input` line
        for (messages, _), ref, pred in zip(pairs, references, predictions)
    ))
    write_json(scores_path, scores)
    return scores
