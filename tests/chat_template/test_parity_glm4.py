"""GLM-4 parity: the project's ids and labels equal the official procedure's, conversation by conversation.

Expected values come from THUDM/GLM-4 finetune_demo/finetune.py `process_batch`, written out in
official_reference.glm4_process: per message `apply_chat_template([message])[2:]` with the OFFICIAL
glm-4-9b-chat chat template (shared tokenizer_config.json), rendered by transformers' own Jinja environment
on the real tokenizer (whose plain encoding equals tiktoken, see test_glm_tokenizers.py). Input records are
in the demo's own `messages` format; the project reads them with its `glm4` converter (and the glaive /
EmoLLM rows with the converters the README names). Nothing here is derived from glmtune.chat_template.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from conftest import shared_data
from helpers.official_reference import (emollm_messages, emollm_multiturn_rows, glaive_as_glm4, glaive_tool_rows, glm4_process,
                                glm4_tool, json_lines)
from transformers import AutoTokenizer

from glmtune.data.formats import CONVERTERS, from_dataset_info
from helpers.official_tokenizers import load_glm4_tokenizer
from glmtune.chat_template import encode_conversation, encode_prompt, get_template

GLM4 = get_template("glm4")
WEATHER = {"name": "get_weather", "description": "查询城市的实时天气",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "城市名"}}, "required": ["city"]}}
STOCK = {"name": "get_stock", "description": "Look up a stock price",
         "parameters": {"type": "object", "properties": {"symbol": {"type": "string"}}, "required": ["symbol"]}}
OPENAI = [{"type": "function", "function": WEATHER}, {"type": "function", "function": STOCK}]


def m(role: str, content: str, **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


CALL = [m("user", "北京天气怎么样？"), m("assistant", '{"city": "北京"}', metadata="get_weather"),
        m("observation", '{"temp": 25, "天气": "晴"}'), m("assistant", "北京今天晴，25度。")]

# The demo's `messages` records: every shape the project produces.
CASES = {
    "plain": [m("user", "你好"), m("assistant", "你好！有什么可以帮你？")],
    "multi-turn": [m("user", "Hi"), m("assistant", "Hello!"), m("user", "再说一遍"), m("assistant", "Hello again."),
                   m("user", "Thanks"), m("assistant", "不客气")],
    "system": [m("system", "你是一个乐于助人的助手。"), m("user", "类型#裙*颜色#红色"), m("assistant", "这款红裙简约大方。")],
    "empty-system": [m("system", ""), m("user", "q"), m("assistant", "a")],
    "tools-only-openai": [m("system", "", tools=OPENAI), *CALL],
    "tools-only-plain": [m("system", "", tools=[WEATHER, STOCK]), *CALL],
    "tools-and-system": [m("system", "你是天气助手。", tools=OPENAI), *CALL],
    "two-calls-multi-turn": [m("system", "", tools=[WEATHER, STOCK]), *CALL, m("user", "AAPL?"),
                             m("assistant", '{"symbol": "AAPL"}', metadata="get_stock"), m("observation", '{"price": 190.5}'),
                             m("assistant", "AAPL is at 190.5.")],
    "explicit-loss": [m("system", "s", loss=True), m("user", "q", loss=True), m("assistant", "a", loss=False),
                      m("user", "q2"), m("assistant", '{"city": "上海"}', metadata="get_weather"),
                      m("observation", "{}", loss=True), m("assistant", "b")],
    "chinese-emoji": [m("user", "今天心情不好😢 （微微皱眉）"), m("assistant", "抱抱你🤗！想聊聊发生了什么吗？🌈"),
                      m("user", "  leading spaces\nand\n\nnewlines  "), m("assistant", "\n好的👌\t")],
}


@cache
def _tokenizer() -> Any:
    return load_glm4_tokenizer(shared_data("tokenizers/glm-4-9b-chat/tokenizer.model").parent)


@cache
def _official_template() -> str:
    config = shared_data("tokenizers/glm-4-9b-chat/tokenizer_config.json").read_text(encoding="utf-8")
    return json.loads(config)["chat_template"]


def as_official(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The official template lists only OpenAI-style tools; plain function objects are wrapped."""
    return [{**msg, "tools": [glm4_tool(tool) for tool in msg["tools"]]} if "tools" in msg else msg for msg in messages]


def project(messages: list[dict[str, Any]], fmt: str = "glm4", options: dict[str, Any] | None = None) -> tuple[list[int], list[int]]:
    canonical = CONVERTERS[fmt]({"messages": messages} if fmt == "glm4" else messages, options or {})
    ids, labels, _ = encode_conversation(_tokenizer(), GLM4, canonical)
    return ids, labels


@pytest.mark.parametrize("name", CASES)
def test_table_matches_the_official_finetune_procedure(name: str) -> None:
    messages = CASES[name]
    assert project(messages) == glm4_process(_tokenizer(), _official_template(), as_official(messages))


@pytest.mark.parametrize("name", CASES)
def test_whole_conversation_through_the_official_template(name: str) -> None:
    """apply_chat_template of the official template on all messages at once gives the project's ids (+ eos)."""
    tok = _tokenizer()
    official = tok.apply_chat_template(as_official(CASES[name]), chat_template=_official_template(), tokenize=True, return_dict=False)
    assert project(CASES[name])[0] == [*official, tok.eos_token_id]


def test_tools_block_has_one_newline_before_each_function() -> None:
    """transformers renders the template with trim_blocks: `\\n## name`, not the source's `\\n\\n## name`."""
    text = _tokenizer().apply_chat_template([m("system", "", tools=OPENAI)], chat_template=_official_template(), tokenize=False)
    assert "# 可用工具\n## get_weather\n\n{" in text and "调用的参数。\n## get_stock\n\n{" in text
    assert "\n\n## " not in text


# --- real data -----------------------------------------------------------------------------------

def _glaive() -> list[tuple[str, Any, list[dict[str, Any]]]]:
    info = shared_data("llamafactory/dataset_info.json")
    fmt, options = from_dataset_info(info, "glaive_toolcall_zh_demo")  # as the README says: no format needed
    rows = glaive_tool_rows(shared_data("llamafactory/glaive_toolcall_zh_demo.json"), 50)
    assert len(rows) == 50
    return [(f"glaive row {index}", CONVERTERS[fmt](row, options), glaive_as_glm4(row)) for index, row in rows]


def _emollm() -> list[tuple[str, Any, list[dict[str, Any]]]]:
    samples = []
    for name in ("data.json", "aiwei.json", "tiangou.json"):
        for index, row in emollm_multiturn_rows(shared_data(f"EmoLLM/{name}"), 20):
            samples.append((f"EmoLLM {name} {index}", CONVERTERS["emollm"](row, {}), emollm_messages(row)))
    return samples


def _advertisegen() -> list[tuple[str, Any, list[dict[str, Any]]]]:
    rows = json_lines(shared_data("AdvertiseGen/dev.glm4_messages.jsonl"), 50)  # the GLM-4 demo's own file
    return [(f"AdvertiseGen dev {index}", CONVERTERS["glm4"](row, {}), row["messages"]) for index, row in rows]


SOURCES = {"glaive": _glaive, "emollm": _emollm, "advertisegen": _advertisegen}


@pytest.mark.parametrize("source", SOURCES)
def test_real_conversations_match_the_official_finetune_procedure(source: str) -> None:
    tok, template = _tokenizer(), _official_template()
    for where, canonical, official in SOURCES[source]():
        ids, labels, _ = encode_conversation(tok, GLM4, canonical)
        assert (ids, labels) == glm4_process(tok, template, official), where
        whole = tok.apply_chat_template(official, chat_template=template, tokenize=True, return_dict=False)
        assert ids == [*whole, tok.eos_token_id], where


def _saved_template_ids(tok: Any, canonical: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """The training ids and the prompt ids as a saved chat template renders them (no official code involved)."""
    text = tok.apply_chat_template(canonical, tokenize=False)
    prompt = tok.apply_chat_template(canonical[:-1], tokenize=False, add_generation_prompt=True)
    return tok.encode(text, add_special_tokens=False) + [tok.eos_token_id], tok.encode(prompt, add_special_tokens=False)


@pytest.mark.parametrize("source", [*SOURCES, "table"])
def test_saved_chat_template_renders_the_encoders_ids(source: str, tmp_path: Path) -> None:
    """The template saved with the tokenizer (and so with an export) gives the ids training and generation use."""
    _tokenizer().save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.chat_template == GLM4.jinja()
    samples = ([(name, CONVERTERS["glm4"]({"messages": msgs}, {})) for name, msgs in CASES.items()]
               if source == "table" else [(where, canonical) for where, canonical, _ in SOURCES[source]()])
    for where, canonical in samples:
        ids, _, _ = encode_conversation(_tokenizer(), GLM4, canonical)
        prompt = encode_prompt(_tokenizer(), GLM4, canonical[:-1])
        assert _saved_template_ids(loaded, canonical) == (ids, prompt), where
