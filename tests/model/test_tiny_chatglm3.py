"""The chatglm3 family on a tiny model, which the embedded default (glm4) never runs: tokenize → train → evaluate →
export, and a saved chat template that gives the ids training used.

ChatGLM3's template writes "\\n " after a role token because its SentencePiece tokenizer starts every text segment
with '▁'; a byte-level tiny tokenizer turned that space into a token of its own, so `apply_chat_template` on the
exported model differed from training. The tiny tokenizer of a SentencePiece family is SentencePiece-like now.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from datasets import load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer

from glmtune.chat_template import encode_prompt, get_template
from glmtune.family import FAMILIES
from glmtune.io import read_jsonl

from test_family import ANSWER, conversation, run_family

TOOL = {"name": "get_colour", "description": "颜色", "parameters": {"type": "object", "properties": {}}}


@pytest.fixture(scope="module")
def chatglm3_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_family(tmp_path_factory.mktemp("chatglm3"), "chatglm3", FAMILIES["chatglm3"], export=True)


@pytest.mark.parametrize("messages", [
    conversation(60)["conversations"][:2],  # system + user
    [*conversation(61)["conversations"], {"role": "user", "content": "Shorter, please 😀\n两句话。", "loss": False}],
    [{"role": "system", "content": "", "tools": [TOOL], "loss": False}, conversation(62)["conversations"][1]],
], ids=["system", "two turns, emoji and newline unseen in training", "tools"])
def test_the_exported_template_gives_the_ids_training_used(chatglm3_run: dict[str, Any], messages: list) -> None:
    tokenizer = AutoTokenizer.from_pretrained(chatglm3_run["root"] / "merged")
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.startswith("[gMASK]sop<|") and "\n " in text  # ChatGLM3's layout
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert ids == encode_prompt(tokenizer, get_template("chatglm3"), messages)
    assert tokenizer.unk_token_id not in ids  # byte fallback, as ChatGLM3's: unseen characters are their bytes


def test_the_training_data_holds_no_unknown_token(chatglm3_run: dict[str, Any]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(chatglm3_run["model"])
    sample = load_from_disk(str(chatglm3_run["tokenized"]["train"]))[0]
    assert tokenizer.unk_token_id not in sample["input_ids"]
    assert sample["input_ids"][-1] == tokenizer.convert_tokens_to_ids("</s>")
    trained = [token for token, label in zip(sample["input_ids"], sample["labels"]) if label != -100]
    assert tokenizer.decode(trained, skip_special_tokens=True).strip() == ANSWER


def test_chatglm3_trains_evaluates_and_exports(chatglm3_run: dict[str, Any]) -> None:
    summary = chatglm3_run["summary"]
    assert summary["steps"] == 30 and math.isfinite(summary["train_loss"]) and math.isfinite(summary["validation_loss"])
    rows = list(read_jsonl(chatglm3_run["root"] / "predictions.jsonl"))
    assert len(rows) == 5 and all(row["prediction"] == ANSWER for row in rows)  # stopped at </s> or <|user|>
    merged = AutoModelForCausalLM.from_pretrained(chatglm3_run["root"] / "merged")
    tokenizer = AutoTokenizer.from_pretrained(chatglm3_run["root"] / "merged")
    prompt = encode_prompt(tokenizer, get_template("chatglm3"), conversation(60)["conversations"][:2])
    with torch.inference_mode():
        out = merged.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)[0, len(prompt):].tolist()
    assert tokenizer.decode(out, skip_special_tokens=True).strip() == ANSWER
