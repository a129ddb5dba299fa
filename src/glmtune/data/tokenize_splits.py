"""Tokenize the splits with the model's chat template into cached Arrow datasets, plus length stats."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Features, Sequence, Value
from tqdm import tqdm

from glmtune.io import atomic_path, read_jsonl, write_json
from glmtune.logs import bar_options
from glmtune.data.templates import IGNORE_INDEX, encode_conversation, get_template
from glmtune.model.loading import load_tokenizer
from glmtune.settings import ModelSettings, TokenizeSettings

log = logging.getLogger(__name__)
# As datasets infers them for non-empty columns; named so an empty split has them too.
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


def tokenize_split(split_path: str | Path, out_dir: str | Path, tokenizer: Any, template_name: str, cutoff_len: int) -> dict[str, Any]:
    """Encode every conversation of one split; write an Arrow dataset (input_ids, labels) to out_dir."""
    template = get_template(template_name)
    columns: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
    lengths, trained, truncated, no_target = [], [], 0, 0
    rows = list(read_jsonl(split_path))
    for row in tqdm(rows, desc=f"tokenize {Path(split_path).stem}", **bar_options()):
        ids, labels, was_cut = encode_conversation(tokenizer, template, row["conversations"], cutoff_len)
        target = sum(label != IGNORE_INDEX for label in labels)
        if target == 0:
            # Truncation removed every trained token: the sample would teach nothing. Counted in the stats.
            no_target += 1
            continue
        truncated += was_cut
        columns["input_ids"].append(ids)
        columns["labels"].append(labels)
        lengths.append(len(ids))
        trained.append(target)
    _save(columns, out_dir)
    return {
        "samples_in": len(rows), "samples": len(lengths), "truncated": truncated,
        "dropped_no_trained_tokens": no_target, "tokens": int(sum(lengths)), "trained_tokens": int(sum(trained)),
        "length": _percentiles(lengths), "trained_length": _percentiles(trained),
    }


def tokenize_splits(
    splits: dict[str, str | Path], out_dirs: dict[str, str | Path], stats_path: str | Path,
    model_dir: str | Path, settings: TokenizeSettings, model: ModelSettings,
) -> dict[str, Any]:
    """Tokenize each named split with model.template; write the stats file. Truncation is the demos' (input + output
    + 1 tokens) unless one cutoff_len is given. The tokenizer is never remote code (glmtune.model.remote_code), but
    with `model.trust_remote_code` transformers 5 reads the model's remote configuration beside it."""
    tokenizer = load_tokenizer(model_dir, trust_remote_code=model.trust_remote_code)
    limit = settings.cutoff
    stats: dict[str, Any] = {"template": model.template, "cutoff_len": limit, "splits": {}}
    for name, path in splits.items():
        stats["splits"][name] = tokenize_split(path, out_dirs[name], tokenizer, model.template, limit)
        log.info("%s: %s", name, {k: v for k, v in stats["splits"][name].items() if not isinstance(v, dict)})
        check_samples_left(name, stats["splits"][name], limit, settings.cutoff_setting)
    write_json(stats_path, stats)
    return stats


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
