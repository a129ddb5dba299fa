"""glmtune.family: the registry every family-specific place reads, and a made-up third family that one registry
entry brings through tokenize -> train -> evaluate on a tiny model.

"glmx" has role tokens, a prefix and a stop token of its own (none of GLM-4's), GLM-4's tools layout and the
native GLM modules. If any stage still held its own GLM-4 / ChatGLM3 copy, it would fail on, or silently ignore,
these tokens. "chatx" goes further: a ChatML-like layout (an end-of-turn token after every message, no prefix) on
another architecture (transformers' Qwen2, whose MLP is gate_proj + up_proj), registered in one entry and run
tiny model -> tokenize -> train -> evaluate -> export.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import torch
import yaml
from datasets import load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from glmtune.chat_template import IGNORE_INDEX, encode_prompt, get_template, stop_token_ids
from glmtune.family import (CHATGLM_MODULES, DEFAULT_FAMILY, FAMILIES, GLM_ARCHITECTURE, Architecture, ChatLayout, Family,
                            ModuleNames, get_family)
from glmtune.io import read_jsonl, write_jsonl

from conftest import REPO, TRAIN_SETTINGS
from helpers.settings import (evaluate_settings, export_settings, model_settings, tiny_settings, tokenize_settings,
                              train_settings)

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
    architecture=GLM_ARCHITECTURE,
    modules=CHATGLM_MODULES,
)
QWEN2_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CHATX = Family(
    name="chatx",
    title="ChatX (made up, ChatML-like)",
    chat=ChatLayout(
        prefix=(), eos="<|endoftext|>", end_of_turn="<|im_end|>", stop=("<|im_end|>", "<|endoftext|>"), tools_layout="glm4",
        role_tokens=(("system", "<|im_system|>"), ("user", "<|im_user|>"), ("assistant", "<|im_assistant|>"),
                     ("observation", "<|im_tool|>")),
        encode_whole=True,
    ),
    special_tokens=("<|endoftext|>", "<|im_end|>", "<|im_system|>", "<|im_user|>", "<|im_assistant|>", "<|im_tool|>"),
    first_special_id=None,
    pad="<|endoftext|>",
    tokenizer=None,
    architecture=Architecture("qwen2"),
    modules=ModuleNames(native=QWEN2_LINEAR, original=MappingProxyType({}), remote=()),
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


def run_family(root: Path, name: str, entry: Family, lora_targets: list[str] | None = None,
               export: bool = False) -> dict[str, Any]:
    """Tiny model of family `entry` -> tokenized splits -> LoRA steps -> evaluation (-> export), with the family
    registered as `name` only meanwhile."""
    from glmtune.evaluate.predict import evaluate_model
    from glmtune.export.merge import export_model
    from glmtune.model.tiny import build_tiny_model
    from glmtune.tokenize.splits import tokenize_splits
    from glmtune.train.trainer import train_model

    splits = {"train": root / "train.jsonl", "validation": root / "validation.jsonl", "test": root / "test.jsonl"}
    write_jsonl(splits["train"], [conversation(n) for n in range(48)])
    write_jsonl(splits["validation"], [conversation(n) for n in range(48, 52)])
    write_jsonl(splits["test"], [conversation(n) for n in range(52, 57)])
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(FAMILIES, name, entry)
        model = build_tiny_model([splits["train"]], root / "model",
                                 tiny_settings(hidden_size=64, intermediate_size=128, vocab_size=600), family=name)
        model_config = model_settings(template=name)
        tokenized = {part: root / "tok" / part for part in ("train", "validation")}
        stats = tokenize_splits({part: splits[part] for part in tokenized}, tokenized, root / "tok" / "stats.json",
                                model, tokenize_settings(max_input_length=64, max_output_length=64), model_config)
        lora = {**TRAIN_SETTINGS["lora"], **({"target_modules": lora_targets} if lora_targets else {})}
        settings = train_settings(**{**TRAIN_SETTINGS, "lora": lora, "max_steps": 30, "logging_steps": 10, "save_steps": 30})
        summary = train_model(tokenized["train"], tokenized["validation"], model.resolve(), root / "adapter",
                              root / "log.jsonl", root / "loss.png", root / "checkpoints", settings, trust_remote_code=False,
                              family=name)
        scores = evaluate_model(root / "adapter", splits["test"], root / "predictions.jsonl", root / "scores.json",
                                evaluate_settings(batch_size=2, max_new_tokens=32), model_config, tokenize_settings(max_input_length=64), base_model=model)
        if export:
            export_model(root / "adapter", model, root / "merged", splits["test"], export_settings(dtype="float32"),
                         model_config)
    return {"root": root, "model": model, "tokenized": tokenized, "stats": stats, "summary": summary, "scores": scores,
            "test": splits["test"]}


@pytest.fixture(scope="module")
def glmx_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_family(tmp_path_factory.mktemp("glmx"), "glmx", GLMX)


def test_schema_enums_are_the_registry() -> None:
    """The config schema cannot read Python: its model.template enum (and LoRA names) must list the registry's."""
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text(encoding="utf-8"))
    template = schema["properties"]["model"]["properties"]["template"]
    assert template["enum"] == list(FAMILIES) and template["default"] == DEFAULT_FAMILY
    targets = schema["properties"]["train"]["properties"]["lora"]["properties"]["target_modules"]
    # No enum: each family names its own modules (config_rules.lora_targets checks them); `all` is every family's.
    assert "enum" not in targets["items"] and targets["default"] == ["all"]


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
               special_tokens=("<|stop|>",), first_special_id=None, pad="<|stop|>", tokenizer=None,
               architecture=GLM_ARCHITECTURE, modules=CHATGLM_MODULES)


def test_an_end_of_turn_token_must_stop_generation() -> None:
    with pytest.raises(ValueError, match=r"chaty: generation must stop at the end-of-turn token <\|end\|>"):
        Family(name="chaty", title="Chat-Y", chat=ChatLayout(prefix=(), eos="<|stop|>", end_of_turn="<|end|>", stop=("<|stop|>",),
                                                             tools_layout="glm4"),
               special_tokens=("<|stop|>", "<|end|>"), first_special_id=None, pad="<|stop|>", tokenizer=None,
               architecture=GLM_ARCHITECTURE, modules=CHATGLM_MODULES)


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


@pytest.fixture
def chatx(monkeypatch: pytest.MonkeyPatch) -> Family:
    monkeypatch.setitem(FAMILIES, "chatx", CHATX)
    return CHATX


@pytest.fixture(scope="module")
def chatx_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A Qwen2 with a ChatML-like layout, LoRA on `all` of its modules, exported."""
    return run_family(tmp_path_factory.mktemp("chatx"), "chatx", CHATX, lora_targets=["all"], export=True)


def test_target_modules_are_checked_against_the_family(chatx: Family) -> None:
    from glmtune.config_rules import MethodError, lora_targets

    assert lora_targets(["all"], trust_remote_code=False, family="chatx") == list(QWEN2_LINEAR)
    assert lora_targets(["gate_proj", "q_proj"], trust_remote_code=False, family="chatx") == ["gate_proj", "q_proj"]
    with pytest.raises(MethodError, match=r"'gate_up_proj' matches no ChatX \(made up, ChatML-like\) layer \(model.template: "
                                          r"chatx\); use q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, 'all'$"):
        lora_targets(["gate_up_proj"], trust_remote_code=False, family="chatx")
    with pytest.raises(MethodError, match=r"'gate_proj' matches no GLM-4 layer .* or an original name \(query_key_value"):
        lora_targets(["gate_proj"], trust_remote_code=False, family="glm4")


def test_chatx_model_is_its_own_architecture(chatx_run: dict[str, Any], chatx: Family) -> None:
    from glmtune.bench.models import arch_config, random_causal_lm

    config = json.loads((chatx_run["model"] / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "qwen2" and config["architectures"] == ["Qwen2ForCausalLM"]
    adapter = json.loads((chatx_run["root"] / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    assert sorted(adapter["target_modules"]) == sorted(QWEN2_LINEAR)  # `all` is the family's names
    # The benchmarks' random model of that config.json is the same architecture.
    assert type(arch_config(chatx_run["model"] / "config.json")).__name__ == "Qwen2Config"
    random = random_causal_lm(chatx_run["model"] / "config.json")
    assert type(random).__name__ == "Qwen2ForCausalLM"
    assert sum(p.numel() for p in random.parameters()) == sum(
        p.numel() for p in AutoModelForCausalLM.from_pretrained(chatx_run["model"]).parameters())


def test_chatx_closes_every_message_with_its_end_of_turn(chatx_run: dict[str, Any], chatx: Family) -> None:
    tokenizer = AutoTokenizer.from_pretrained(chatx_run["model"])
    vocab = tokenizer.get_vocab()
    assert "<|user|>" not in vocab and "[gMASK]" not in vocab
    sample = load_from_disk(str(chatx_run["tokenized"]["train"]))[0]
    ids, labels = sample["input_ids"], sample["labels"]
    end, roles = vocab["<|im_end|>"], [vocab[token] for token in ("<|im_system|>", "<|im_user|>", "<|im_assistant|>")]
    assert ids[0] == roles[0] and ids[-2:] == [end, vocab["<|endoftext|>"]]
    assert [i for i in ids if i in roles or i == end] == [roles[0], end, roles[1], end, roles[2], end]
    answer_start = ids.index(roles[2]) + 1
    # Trained: the assistant header's newline, the answer and its end-of-turn; not the eos after it.
    assert labels[:answer_start] == [IGNORE_INDEX] * answer_start
    assert labels[answer_start:-1] == ids[answer_start:-1] and labels[-1] == IGNORE_INDEX
    assert tokenizer.decode(ids[answer_start:-1]) == "\n" + ANSWER + "<|im_end|>"
    # The saved chat template renders the same layout, tools included, as the ids evaluation uses.
    tool = {"name": "get_colour", "description": "颜色", "parameters": {"type": "object", "properties": {}}}
    messages = [{**conversation(1)["conversations"][0], "tools": [tool]}, conversation(1)["conversations"][1]]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_system|>\n") and "<|im_end|><|im_system|>\n你是一个简洁的助手。<|im_end|><|im_user|>\n" in text
    assert text.endswith(messages[1]["content"] + "<|im_end|><|im_assistant|>")
    assert tokenizer.encode(text, add_special_tokens=False) == encode_prompt(tokenizer, get_template("chatx"), messages)


def test_chatx_trains_evaluates_and_exports(chatx_run: dict[str, Any], chatx: Family) -> None:
    summary = chatx_run["summary"]
    assert summary["steps"] == 30 and math.isfinite(summary["train_loss"]) and math.isfinite(summary["validation_loss"])
    rows = list(read_jsonl(chatx_run["root"] / "predictions.jsonl"))
    assert len(rows) == 5 and all(row["prediction"] == ANSWER for row in rows)  # stopped at <|im_end|>
    assert chatx_run["scores"]["rouge-l"] == 100
    # The exported model is a plain Qwen2 that answers the same, stopping at the end-of-turn token.
    merged = AutoModelForCausalLM.from_pretrained(chatx_run["root"] / "merged")
    tokenizer = AutoTokenizer.from_pretrained(chatx_run["root"] / "merged")
    assert type(merged).__name__ == "Qwen2ForCausalLM"
    prompt = tokenizer.apply_chat_template(conversation(60)["conversations"][:2], add_generation_prompt=True)
    prompt = prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt
    with torch.inference_mode():
        out = merged.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False)[0, len(prompt):].tolist()
    assert out[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.decode(out, skip_special_tokens=True).strip() == ANSWER
