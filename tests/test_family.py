"""glmtune.family: the registry every family-specific place reads, and a made-up third family that one registry
entry brings through tokenize -> train -> evaluate on a tiny model.

"glmx" has role tokens, a prefix and a stop token of its own (none of GLM-4's), GLM-4's tools layout and the
native GLM modules. If any stage still held its own GLM-4 / ChatGLM3 copy, it would fail on, or silently ignore,
these tokens.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import yaml
from datasets import load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from glmtune.data.templates import IGNORE_INDEX, encode_prompt, get_template, stop_token_ids
from glmtune.family import CHATGLM_MODULES, DEFAULT_FAMILY, FAMILIES, ChatLayout, Family, get_family
from glmtune.io import read_jsonl, write_jsonl

from conftest import REPO, TRAIN_SETTINGS
from helpers.settings import evaluate_settings, model_settings, tiny_settings, tokenize_settings, train_settings

GLMX = Family(
    name="glmx",
    title="GLM-X (made up)",
    chat=ChatLayout(
        prefix=("<|x|>",), eos="<|stop|>", stop=("<|stop|>", "<|usr|>"), tools_layout="glm4",
        role_tokens=(("system", "<|sys|>"), ("user", "<|usr|>"), ("assistant", "<|bot|>"), ("observation", "<|obs|>")),
        drop_empty=True, encode_whole=True,
    ),
    special_tokens=("<|stop|>", "<|x|>", "<|sys|>", "<|usr|>", "<|bot|>", "<|obs|>"),
    first_special_id=None,
    pad="<|stop|>",
    tokenizer=None,  # no official tokenizer.model: tiny models only
    modules=CHATGLM_MODULES,
)
ANSWER = "好的，收到。"
COLOURS = ["红色", "蓝色", "白色", "黑色", "绿色", "黄色", "紫色", "灰色"]


def conversation(number: int) -> dict[str, Any]:
    return {"conversations": [
        {"role": "system", "content": "你是一个简洁的助手。", "loss": False},
        {"role": "user", "content": f"第{number}件：类型#裙*颜色#{COLOURS[number % len(COLOURS)]}", "loss": False},
        {"role": "assistant", "content": ANSWER, "loss": True},
    ]}


@pytest.fixture
def glmx(monkeypatch: pytest.MonkeyPatch) -> Family:
    monkeypatch.setitem(FAMILIES, "glmx", GLMX)
    return GLMX


@pytest.fixture(scope="module")
def glmx_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Tiny glmx model -> tokenized splits -> LoRA steps -> evaluation, with glmx registered only meanwhile."""
    from glmtune.data.tokenize_splits import tokenize_splits
    from glmtune.evaluate.predict import evaluate_model
    from glmtune.model.tiny import build_tiny_model
    from glmtune.train.trainer import train_model

    root = tmp_path_factory.mktemp("glmx")
    splits = {"train": root / "train.jsonl", "validation": root / "validation.jsonl", "test": root / "test.jsonl"}
    write_jsonl(splits["train"], [conversation(n) for n in range(48)])
    write_jsonl(splits["validation"], [conversation(n) for n in range(48, 52)])
    write_jsonl(splits["test"], [conversation(n) for n in range(52, 57)])
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(FAMILIES, "glmx", GLMX)
        model = build_tiny_model([splits["train"]], root / "model",
                                 tiny_settings(hidden_size=64, intermediate_size=128, vocab_size=600), family="glmx")
        glmx = model_settings(template="glmx")
        tokenized = {name: root / "tok" / name for name in ("train", "validation")}
        stats = tokenize_splits({name: splits[name] for name in tokenized}, tokenized, root / "tok" / "stats.json",
                                model, tokenize_settings(max_input_length=64, max_output_length=64), glmx)
        settings = train_settings(**{**TRAIN_SETTINGS, "max_steps": 30, "logging_steps": 10, "save_steps": 30})
        summary = train_model(tokenized["train"], tokenized["validation"], model.resolve(), root / "adapter",
                              root / "log.jsonl", root / "loss.png", root / "checkpoints", settings, trust_remote_code=False,
                              family="glmx")
        scores = evaluate_model(root / "adapter", splits["test"], root / "predictions.jsonl", root / "scores.json",
                                evaluate_settings(batch_size=2, max_new_tokens=32), glmx, 64, base_model=model)
    yield {"root": root, "model": model, "tokenized": tokenized, "stats": stats, "summary": summary, "scores": scores,
           "test": splits["test"]}


def test_schema_enums_are_the_registry() -> None:
    """The config schema cannot read Python: its model.template enum (and LoRA names) must list the registry's."""
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text(encoding="utf-8"))
    template = schema["properties"]["model"]["properties"]["template"]
    assert template["enum"] == list(FAMILIES) and template["default"] == DEFAULT_FAMILY
    targets = schema["properties"]["train"]["properties"]["lora"]["properties"]["target_modules"]
    for family in FAMILIES.values():
        assert targets["items"]["enum"] == [*family.modules.native, "all", *family.modules.original]
        assert targets["default"] == list(family.modules.native)


@pytest.mark.parametrize("command", [["infer", "model"], ["bench-eval", "model", "test"], ["bench-train", "arch", "train"]])
def test_cli_template_choices_are_the_registry(glmx: Family, command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from glmtune.cli import main

    with pytest.raises(SystemExit):
        main([*command, "--template", "glm5"])
    assert re.search(r"invalid choice: 'glm5' \(choose from '?glm4'?, '?chatglm3'?, '?glmx'?\)", capsys.readouterr().err)


def test_unknown_family_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="unknown model family 'glm5'; known: glm4, chatglm3"):
        get_family("glm5")


def test_official_ids_come_from_the_registry() -> None:
    glm4, chatglm3 = get_family("glm4"), get_family("chatglm3")
    assert [glm4.special_id(t) for t in glm4.chat.stop] == [151329, 151336, 151338]  # glm-4-9b-chat's eos_token_id
    assert chatglm3.generation_stop_ids() == (64795, 64797)
    assert glm4.chat_special_tokens() == list(glm4.special_tokens[:10])  # no image/video markers in a tiny model


def test_a_family_entry_must_use_its_own_tokens() -> None:
    with pytest.raises(ValueError, match=r"glmy: the chat layout uses \['<\|end\|>'\]"):
        Family(name="glmy", title="GLM-Y", chat=ChatLayout(prefix=(), eos="<|stop|>", stop=("<|end|>",), tools_layout="glm4"),
               special_tokens=("<|stop|>",), first_special_id=None, pad="<|stop|>", tokenizer=None, modules=CHATGLM_MODULES)


def test_glmx_tiny_model_carries_the_family(glmx_run: dict[str, Any], glmx: Family) -> None:
    tokenizer = AutoTokenizer.from_pretrained(glmx_run["model"])
    vocab = tokenizer.get_vocab()
    assert all(token in vocab for token in glmx.special_tokens)
    assert "<|user|>" not in vocab and "[gMASK]" not in vocab  # nothing of GLM-4's
    assert tokenizer.eos_token == tokenizer.pad_token == "<|stop|>"
    stops = [vocab["<|stop|>"], vocab["<|usr|>"]]
    assert GenerationConfig.from_pretrained(glmx_run["model"]).eos_token_id == stops
    # The saved chat template renders glmx's layout, tools included, as the ids training and evaluation use.
    tool = {"name": "get_colour", "description": "颜色", "parameters": {"type": "object", "properties": {}}}
    messages = [{**conversation(1)["conversations"][0], "tools": [tool]}, conversation(1)["conversations"][1]]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|x|><|sys|>\n") and "<|sys|>\n你是" in text and text.endswith("<|usr|>\n" + messages[1]["content"] + "<|bot|>")
    assert tokenizer.encode(text, add_special_tokens=False) == encode_prompt(tokenizer, get_template("glmx"), messages)


def test_glmx_labels_mask_the_prompt(glmx_run: dict[str, Any], glmx: Family) -> None:
    tokenizer = AutoTokenizer.from_pretrained(glmx_run["model"])
    vocab = tokenizer.get_vocab()
    sample = load_from_disk(str(glmx_run["tokenized"]["train"]))[0]
    ids, labels = sample["input_ids"], sample["labels"]
    assert ids[0] == vocab["<|x|>"] and ids[-1] == vocab["<|stop|>"]
    roles = [vocab[token] for token in ("<|sys|>", "<|usr|>", "<|bot|>")]
    assert [i for i in ids if i in roles] == roles  # one message each, in order
    answer_start = ids.index(vocab["<|bot|>"]) + 1  # the assistant header's newline, then the answer
    assert labels[:answer_start] == [IGNORE_INDEX] * answer_start
    assert labels[answer_start:] == ids[answer_start:]
    assert tokenizer.decode(ids[answer_start:], skip_special_tokens=True) == "\n" + ANSWER
    assert glmx_run["stats"]["template"] == "glmx" and glmx_run["stats"]["splits"]["train"]["samples"] == 48


def test_glmx_trains_and_evaluates(glmx_run: dict[str, Any], glmx: Family) -> None:
    summary = glmx_run["summary"]
    assert summary["steps"] == 30 and math.isfinite(summary["train_loss"]) and math.isfinite(summary["validation_loss"])
    losses = [row["loss"] for row in read_jsonl(glmx_run["root"] / "log.jsonl") if "loss" in row]
    assert losses[-1] < losses[0]
    assert (glmx_run["root"] / "adapter" / "adapter_model.safetensors").is_file()
    rows = list(read_jsonl(glmx_run["root"] / "predictions.jsonl"))
    assert len(rows) == len(list(read_jsonl(glmx_run["test"]))) == 5
    assert [row["reference"] for row in rows] == [ANSWER] * 5
    assert all(row["prediction"] == ANSWER for row in rows)  # the learned answer, and nothing after it
    assert glmx_run["scores"]["rouge-l"] == 100


def test_glmx_generation_stops_at_its_stop_token(glmx_run: dict[str, Any], glmx: Family) -> None:
    from peft import PeftModel

    tokenizer = AutoTokenizer.from_pretrained(glmx_run["model"])
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(glmx_run["model"]), glmx_run["root"] / "adapter")
    template = get_template("glmx")
    prompt = encode_prompt(tokenizer, template, conversation(60)["conversations"][:2])
    with torch.inference_mode():
        stopped = model.generate(torch.tensor([prompt]), max_new_tokens=48, do_sample=False,
                                 eos_token_id=stop_token_ids(tokenizer, template))[0, len(prompt):].tolist()
        # The same greedy run with <|stop|> taken out of the stops emits it at the same place and goes on past it:
        # the stop token, not max_new_tokens, is what ended the first.
        others = [token for token in stop_token_ids(tokenizer, template) if token != stopped[-1]]
        unstopped = model.generate(torch.tensor([prompt]), max_new_tokens=48, do_sample=False,
                                   eos_token_id=others)[0, len(prompt):].tolist()
    assert stopped[-1] == tokenizer.convert_tokens_to_ids("<|stop|>") and len(stopped) < 48
    assert unstopped[: len(stopped)] == stopped and len(unstopped) > len(stopped)
    assert tokenizer.decode(stopped, skip_special_tokens=True).strip() == ANSWER
