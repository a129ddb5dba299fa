"""What the GPU tests (tests/gpu/) use around the package's stages: prompts of a test split, predictions without the
scorers (the GPU machine has no jieba / rouge-chinese / nltk), a loss on tokenized rows, readable differences."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from glmtune.chat_template import encode_prompt, get_template, reference_answer, split_for_generation
from glmtune.evaluate.batching import plan_batches, static_shape
from glmtune.evaluate.generation import generate_batches
from glmtune.io import read_jsonl


REPO = Path(__file__).resolve().parents[2]


def default_config() -> dict[str, Any]:
    """config/config.yaml: the default job's settings (the stages' settings fill in the schema's defaults)."""
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))


def prompts_of(test_path: str | Path, tokenizer: Any, template: str, max_input_length: int,
                 count: int | None = None) -> tuple[list[list[int]], list[str]]:
    """The evaluate stage's prompts (the last assistant turn cut off) and their references."""
    rows = list(read_jsonl(test_path))[:count]
    pairs = [split_for_generation(row["conversations"]) for row in rows]
    prompts = [encode_prompt(tokenizer, get_template(template), messages, max_input_length) for messages, _ in pairs]
    return prompts, [reference_answer(tokenizer, get_template(template), answer) for _, answer in pairs]


def predict(model: Any, tokenizer: Any, template: str, prompts: Sequence[list[int]], batch_size: int,
            max_new_tokens: int, cache: str = "dynamic") -> list[str]:
    """Greedy predictions in prompt order, batched as the evaluate stage batches them (one static shape for all)."""
    plan = plan_batches(prompts, batch_size)
    shape = static_shape(prompts, plan, max_new_tokens) if cache == "static" else None
    out = generate_batches(model, tokenizer, get_template(template), prompts, plan, max_new_tokens, False, cache,
                           shape=shape)
    return [out[i] for i in range(len(prompts))]


def char_overlap(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean F1 of each prediction's and reference's distinct characters: a scorer-free sign of learning (random text
    covers many of a reference's characters, but most of its own are not in it)."""
    scores = []
    for prediction, reference in zip(predictions, references):
        common = len(set(prediction) & set(reference))
        scores.append(2 * common / max(len(set(prediction)) + len(set(reference)), 1))
    return sum(scores) / max(len(scores), 1)


def differences(first: Sequence[str], second: Sequence[str], names: tuple[str, str], limit: int = 5) -> str:
    """The rows where two prediction lists differ, the first `limit` of them shown in full."""
    rows = [i for i, (a, b) in enumerate(zip(first, second)) if a != b]
    shown = "\n".join(f"  row {i}:\n    {names[0]}: {first[i]!r}\n    {names[1]}: {second[i]!r}" for i in rows[:limit])
    return f"{len(rows)} of {len(first)} predictions differ ({names[0]} vs {names[1]}):\n{shown}"


@torch.no_grad()
def mean_loss(model: Any, tokenized_dir: str | Path, pad_id: int, rows: int = 32, batch_size: int = 8) -> float:
    """The model's mean token loss on the first `rows` rows of a tokenized split (the Trainer's loss, recomputed)."""
    from datasets import load_from_disk

    from glmtune.train.collate import PadCollator

    data = load_from_disk(str(tokenized_dir)).select(range(rows))
    collate, device, losses = PadCollator(pad_id), next(model.parameters()).device, []
    for start in range(0, rows, batch_size):
        batch = collate([data[i] for i in range(start, min(start + batch_size, rows))])
        losses.append(float(model(**{k: v.to(device) for k, v in batch.items()}).loss))
    return sum(losses) / len(losses)


def build_default_job(root: Path) -> dict[str, Path]:
    """The default job's data stages on the CPU, at its settings but fewer rows: demo AdvertiseGen data -> converted
    -> split -> tiny GLM model (config's model.tiny) -> tokenized train / validation (config's tokenize)."""
    from glmtune.data.convert import convert_file
    from glmtune.data.split import merge_and_split
    from helpers.settings import converted_part, convert_settings, split_settings
    from glmtune.data.synthetic import write_advertisegen
    from glmtune.tokenize.splits import tokenize_splits
    from glmtune.model.tiny import build_tiny_model
    from helpers.settings import model_settings, section, tiny_settings, tokenize_settings

    config = default_config()
    raw = write_advertisegen(root / "raw", 1200, 60, 0)
    for name, path in raw.items():
        convert_file(path, root / f"{name}.jsonl", root / f"{name}.rejects.jsonl", root / f"{name}.report.json",
                     "advertisegen", "synthetic_adgen", convert_settings())
    split = section("split", config.get("split") or {})
    merge_and_split([converted_part("synthetic_adgen", "all", str(root / "train.jsonl")),
                     converted_part("synthetic_adgen", "test", str(root / "dev.jsonl"))],
                    root / "splits", split_settings(validation_ratio=split["validation_ratio"], test_ratio=0.0, seed=split["seed"]), write_test=True)
    model = build_tiny_model([root / "splits" / "train.jsonl"], root / "model",
                             tiny_settings(**(config["model"].get("tiny") or {})), family="glm4")
    tokenized = {"train": root / "tok" / "train", "validation": root / "tok" / "validation"}
    tokenize_splits({s: root / "splits" / f"{s}.jsonl" for s in tokenized}, tokenized, root / "tok" / "stats.json",
                    model, tokenize_settings(**config["tokenize"]), model_settings())
    return {"root": root, "model": model, "train": tokenized["train"], "validation": tokenized["validation"],
            "test": root / "splits" / "test.jsonl"}
