"""Tokenize the splits with the model's chat template into cached Arrow datasets, plus length stats."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Features, Sequence, Value
from tqdm import tqdm

from glmtune.io import atomic_path, read_jsonl, write_json
from glmtune.logs import bar_options
from glmtune.chat_template import (IGNORE_INDEX, ChatTemplate, encode_conversation, get_template, prompt_parts,
                                   split_for_generation, unwritten_problem)
from glmtune.config_rules import model_positions, positions_problem
from glmtune.model.loading import load_tokenizer
from glmtune.settings import ModelSettings, TokenizeSettings

log = logging.getLogger(__name__)
# As datasets infers them for non-empty columns; named so an empty split has them too.
WHOLE_POINTS = (50, 90, 95, 99, 100)  # length percentiles before truncation
FEATURES = Features({"input_ids": Sequence(Value("int32")), "labels": Sequence(Value("int64"))})


def _percentiles(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    points = np.percentile(values, [50, 90, 99, 100])
    return {"mean": round(float(np.mean(values)), 2), **{f"p{p}": float(v) for p, v in zip((50, 90, 99, 100), points)}}


def _save(columns: dict[str, list[list[int]]], out_dir: str | Path) -> None:
    """An Arrow dataset that load_from_disk can read even with no rows: datasets writes no shard for an empty one
    (load_from_disk then fails with IndexError), so an empty split is written as one empty shard."""
    dataset = Dataset.from_dict(columns, features=FEATURES)
    with atomic_path(out_dir) as tmp:
        dataset.save_to_disk(str(tmp), num_shards=None if len(dataset) else 1)


def _before_cut(values: list[int]) -> dict[str, int]:
    """Percentiles of lengths before truncation, each an actual length (so a limit set to it keeps that share whole)."""
    if not values:
        return {}
    points = np.percentile(values, WHOLE_POINTS, method="higher")
    return {f"p{p}": int(v) for p, v in zip(WHOLE_POINTS, points)}



def whole_limits(prompt_p95: int, answer_p95: int, total_p95: int) -> dict[str, int]:
    """Limits that keep 95 % of the samples whole: the evaluation prompts' p95 as max_input_length (what evaluation
    keeps) and a max_output_length of at least the last answers' p95 such that input + output + 1 reaches the samples'
    p95; or that p95 as one cutoff_len."""
    max_input = max(prompt_p95, 1)
    return {"max_input_length": max_input, "max_output_length": max(total_p95 - max_input - 1, answer_p95, 1),
            "cutoff_len": max(total_p95, 2)}


def evaluation_prompt_length(tokenizer: Any, template: ChatTemplate, conversation: list[dict[str, Any]]) -> int:
    """The tokens of the prompt an evaluation gives for this conversation (the messages before its last answer, then
    the answer's role token): what max_input_length must hold. Single-turn, the untrained tokens; multi-turn, the
    earlier answers too."""
    messages_ids, header = prompt_parts(tokenizer, template, split_for_generation(conversation)[0])
    return len(messages_ids) + len(header)


def record_place(source: dict[str, Any] | None) -> str:
    """A split row's record as a person finds it: its dataset, its file where the record's place does not name it,
    and its place there (a line, a record)."""
    if not source:
        return "<dataset>"
    file = f"{source['file']}: " if source.get("file") else ""
    return f"{source.get('dataset', '<dataset>')} {file}{source.get('index', '')}"


def check_written(template: ChatTemplate, row: dict[str, Any], split_path: str | Path, stage: str = "tokenize") -> None:
    """Refuse a conversation with a message the template writes nothing for (chat_template.unwritten_problem: an empty
    observation, or an empty question kept by `clean.drop_empty_turns: false`), naming its record; the evaluation
    checks its test conversations the same way."""
    problem = unwritten_problem(template, row["conversations"])
    if problem is None:
        return
    dataset = (row.get("source") or {}).get("dataset", "<dataset>")
    raise ValueError(f"{stage}: {split_path}: {record_place(row.get('source'))}: {problem} (an empty question: "
                     f"datasets.{dataset}.clean.drop_empty_turns: true drops its exchange, counted)")


def tokenize_split(split_path: str | Path, out_dir: str | Path, tokenizer: Any, template_name: str, cutoff_len: int,
                   before_save: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Encode every conversation of one split; write an Arrow dataset (input_ids, labels) to out_dir. The stats count
    what truncation cost (samples that lost answer tokens, samples left with none) with the lengths before it;
    `before_save` may refuse them before anything is written."""
    template = get_template(template_name)
    columns: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
    lengths, trained, truncated, lost_answer, no_target = [], [], 0, 0, 0
    full, prompts, answers, last_answers = [], [], [], []
    rows = list(read_jsonl(split_path))
    as_text: Counter[str] = Counter()  # special tokens' strings held by message text -> samples (encoded as text)
    dropped: list[Any] = []  # the records of the samples left with no trained token
    for row in tqdm(rows, desc=f"tokenize {Path(split_path).stem}", **bar_options()):
        found: set[str] = set()
        check_written(template, row, split_path)
        all_ids, all_labels, _ = encode_conversation(tokenizer, template, row["conversations"], found=found)
        as_text.update(found)
        answer = sum(label != IGNORE_INDEX for label in all_labels)
        full.append(len(all_ids))
        answers.append(answer)
        prompts.append(evaluation_prompt_length(tokenizer, template, row["conversations"]))
        last_answers.append(len(all_ids) - prompts[-1])  # the answer after the evaluation's prompt (single-turn: all)
        ids, labels = all_ids[:cutoff_len], all_labels[:cutoff_len]
        target = sum(label != IGNORE_INDEX for label in labels)
        if target == 0:
            # Truncation removed every trained token: the sample would teach nothing. Counted and named in the stats.
            no_target += 1
            dropped.append(row.get("source"))
            continue
        truncated += len(ids) < len(all_ids)
        lost_answer += target < answer
        columns["input_ids"].append(ids)
        columns["labels"].append(labels)
        lengths.append(len(ids))
        trained.append(target)
    stats = {
        "samples_in": len(rows), "samples": len(lengths), "truncated": truncated,
        "answer_truncated": lost_answer, "dropped_no_trained_tokens": no_target, "dropped_records": dropped,
        "tokens": int(sum(lengths)), "trained_tokens": int(sum(trained)),
        "special_token_text": dict(sorted(as_text.items())),
        "length": _percentiles(lengths), "trained_length": _percentiles(trained),
        "before_truncation": {"length": _before_cut(full), "prompt": _before_cut(prompts), "answer": _before_cut(answers)},
    }
    if rows:
        before = stats["before_truncation"]
        # The output floor is the last answer's: multi-turn, the earlier answers are in the prompt already.
        stats["whole_95"] = whole_limits(before["prompt"]["p95"], _before_cut(last_answers)["p95"],
                                         before["length"]["p95"])
    if as_text:
        log.warning("%s: message text holds the string of a special token (%s; samples per token): encoded as "
                    "text, not as the token, so it cannot open a turn or end an answer", Path(split_path).stem,
                    ", ".join(f"{token} {count}" for token, count in sorted(as_text.items())))
    if before_save:
        before_save(stats)
    _save(columns, out_dir)
    return stats


def tokenize_splits(
    splits: dict[str, str | Path], out_dirs: dict[str, str | Path], stats_path: str | Path,
    model_dir: str | Path, settings: TokenizeSettings, model: ModelSettings,
) -> dict[str, Any]:
    """Tokenize each named split with model.template; write the stats file. Truncation is the demos' (input + output
    + 1 tokens) unless one cutoff_len is given. The tokenizer is never remote code (glmtune.model.remote_code), but
    with `model.trust_remote_code` transformers 5 reads the model's remote configuration beside it."""
    tokenizer = load_tokenizer(model_dir, trust_remote_code=model.trust_remote_code)
    config = json.loads(Path(model_dir, "config.json").read_text(encoding="utf-8-sig"))
    if problem := positions_problem(model_positions(config), settings):
        raise ValueError(f"{model_dir}: {problem}")
    limit = settings.cutoff
    stats: dict[str, Any] = {"template": model.template, "cutoff_len": limit, "setting": settings.cutoff_setting,
                             "max_truncated_ratio": settings.max_truncated_ratio, "splits": {}}

    for name, path in splits.items():
        def check(split: dict[str, Any], name: str = name) -> None:
            log_truncation(name, split, limit, settings.cutoff_setting)
            check_samples_left(name, split, limit, settings.cutoff_setting)
            check_truncation(name, split, limit, settings)

        stats["splits"][name] = tokenize_split(path, out_dirs[name], tokenizer, model.template, limit, check)
        log.info("%s: %s", name, {k: v for k, v in stats["splits"][name].items() if not isinstance(v, (dict, list))})
    write_json(stats_path, stats)
    return stats


def _limits_text(whole: dict[str, int]) -> str:
    return (f"tokenize.max_input_length: {whole['max_input_length']} and max_output_length: "
            f"{whole['max_output_length']} (or cutoff_len: {whole['cutoff_len']})")


def log_truncation(name: str, split: dict[str, Any], limit: int, setting: str) -> None:
    """What truncation cost the split, with the lengths before it and the limits that would keep 95 % whole."""
    if not split["samples_in"]:
        return
    lost = split["answer_truncated"] + split["dropped_no_trained_tokens"]
    before = split["before_truncation"]
    points = ", ".join(f"{key} {before['length'][key]}" for key in ("p50", "p90", "p95", "p99"))
    log.log(logging.WARNING if lost else logging.INFO,
            "%s: %d of %d samples lost answer tokens to truncation at %d tokens (%s), %d of them dropped with none "
            "left; lengths before truncation: %s, max %d (prompts p95 %d, answers p95 %d); 95 %% stay whole with %s",
            name, lost, split["samples_in"], limit, setting, split["dropped_no_trained_tokens"], points,
            before["length"]["p100"], before["prompt"]["p95"], before["answer"]["p95"], _limits_text(split["whole_95"]))
    if records := split["dropped_records"]:
        named = ", ".join(record_place(source) for source in records[:5] if source)
        log.warning("%s: the dropped samples' records (every one in stats.json, dropped_records): %s%s", name, named,
                    f" and {len(records) - 5} more" if len(records) > 5 else "")


def check_truncation(name: str, split: dict[str, Any], limit: int, settings: TokenizeSettings) -> None:
    """Stop before training when truncation cuts the answers of more than tokenize.max_truncated_ratio of the
    training samples: the model would learn to stop mid-answer."""
    if name != "train" or not split["samples_in"]:
        return
    lost = split["answer_truncated"] + split["dropped_no_trained_tokens"]
    if lost / split["samples_in"] <= settings.max_truncated_ratio:
        return
    raise ValueError(f"tokenize: {lost} of {split['samples_in']} training samples ({lost / split['samples_in']:.0%}) lose "
                     f"answer tokens to truncation at {limit} tokens ({settings.cutoff_setting}), more than "
                     f"tokenize.max_truncated_ratio {settings.max_truncated_ratio}; 95 % stay whole with "
                     f"{_limits_text(split['whole_95'])}, or raise tokenize.max_truncated_ratio")


def check_samples_left(name: str, split: dict[str, Any], limit: int, setting: str) -> None:
    """Stop when training would have nothing to learn from; say so when only validation is empty."""
    if split["samples"]:
        return
    if name != "train":
        log.warning("the %s split has no sample (%d before truncation): training runs without %s loss; for one, "
                    "give a validation file or an `all` file with split.validation_ratio", name, split["samples_in"], name)
        return
    if not split["samples_in"]:
        raise ValueError(f"tokenize: the {name} split is empty")
    raise ValueError(f"tokenize: no usable {name} sample: all {split['samples_in']} lost every trained token to "
                     f"truncation at {limit} tokens ({setting}); raise it above the prompts' length")
