"""ChatGLM3 parity: the project's ids and labels equal the official rules', conversation by conversation.

Expected text is written out by hand from the official sources, as (role, metadata, text, trained) segments:
THUDM/ChatGLM3 finetune_demo/README.md (format and default loss: system and user untrained, every other role
trained, a `loss` honoured), finetune_demo/preprocess_utils.py `format_conversation` (the tools system message
TOOL_DEFINITION_PREFIX + json.dumps(tools, indent=4, ensure_ascii=False) inserted first; a `tool` message is an
assistant call ```` ```python\\ntool_call(...)\\n``` ```` plus an untrained observation, a non-string one dumped as
JSON). Segments become ids with the `sentencepiece` package as chatglm3-6b's tokenization_chatglm.py
`build_single_message` does: [<|role|>] + sp.encode(f"{metadata}\\n") + sp.encode(text). The real-data checks use
official_reference.chatglm3_segments, the same procedure written out from preprocess_utils.py.
Nothing here is derived from glmtune.chat_template.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from conftest import shared_data
from helpers.official_reference import (chatglm3_ids, chatglm3_segments, emollm_messages, emollm_multiturn_rows,
                                format_function_call, glaive_as_chatglm3, glaive_tool_rows, json_lines)
from transformers import AutoTokenizer

from glmtune.data.formats import CONVERTERS, from_dataset_info
from helpers.official_tokenizers import load_chatglm3_tokenizer
from glmtune.chat_template import encode_conversation, encode_prompt, get_template, reference_answer, split_for_generation

CHATGLM3 = get_template("chatglm3")
WEATHER = {"name": "get_weather", "description": "查询城市的实时天气",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
STOCK = {"name": "get_stock", "description": "Look up a stock price", "parameters": {"type": "object", "properties": {}}}
INTRO = "Answer the following questions as best as you can. You have access to the following tools:\n"
TOOLS_TEXT = INTRO + json.dumps([WEATHER, STOCK], indent=4, ensure_ascii=False)  # preprocess_utils.py's json.dumps
CALL_TEXT = "```python\ntool_call(city='北京')\n```"
OBSERVATION = '{"temp": 25, "天气": "晴"}'


def c(role: str, content: str, **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


TOOL = {"role": "tool", "name": "get_weather", "parameters": {"city": "北京"}, "observation": {"temp": 25, "天气": "晴"}}
CALL_SEGMENTS = [("user", "", "北京天气？", False), ("assistant", "get_weather", CALL_TEXT, True),
                 ("observation", "", OBSERVATION, False), ("assistant", "", "北京晴，25度。", True)]

# (ChatGLM3 demo record, the segments its rules give), written out by hand.
CASES = {
    "plain": ({"conversations": [c("user", "你好"), c("assistant", "你好！")]},
              [("user", "", "你好", False), ("assistant", "", "你好！", True)]),
    "multi-turn": ({"conversations": [c("user", "Hi"), c("assistant", "Hello!"), c("user", "再说一遍"), c("assistant", "Hello again.")]},
                   [("user", "", "Hi", False), ("assistant", "", "Hello!", True), ("user", "", "再说一遍", False),
                    ("assistant", "", "Hello again.", True)]),
    "system": ({"conversations": [c("system", "你是助手。"), c("user", "q"), c("assistant", "a")]},
               [("system", "", "你是助手。", False), ("user", "", "q", False), ("assistant", "", "a", True)]),
    "tools-only": ({"tools": [WEATHER, STOCK], "conversations": [c("user", "北京天气？"), TOOL, c("assistant", "北京晴，25度。")]},
                   [("system", "", TOOLS_TEXT, False), *CALL_SEGMENTS]),
    "tools-and-system": ({"tools": [WEATHER, STOCK],
                          "conversations": [c("system", "你是天气助手。"), c("user", "北京天气？"), TOOL, c("assistant", "北京晴，25度。")]},
                         [("system", "", TOOLS_TEXT, False), ("system", "", "你是天气助手。", False), *CALL_SEGMENTS]),
    "thought-call-observation-answer": (
        {"tools": [WEATHER, STOCK], "conversations": [
            c("user", "AAPL 和北京？"), c("assistant", "我先查股价。"),
            {"role": "tool", "name": "get_stock", "parameters": {"symbol": "AAPL", "days": 3, "raw": True}, "observation": "190.5"},
            {"role": "tool", "name": "get_weather", "parameters": {"city": "北京"}, "observation": ["晴", 25]},
            c("assistant", "AAPL 190.5，北京晴。")]},
        [("system", "", TOOLS_TEXT, False), ("user", "", "AAPL 和北京？", False), ("assistant", "", "我先查股价。", True),
         ("assistant", "get_stock", "```python\ntool_call(symbol='AAPL', days=3, raw=True)\n```", True),
         ("observation", "", "190.5", False),
         ("assistant", "get_weather", CALL_TEXT, True), ("observation", "", '["晴", 25]', False),
         ("assistant", "", "AAPL 190.5，北京晴。", True)]),
    "explicit-observation-is-trained": (
        {"conversations": [c("user", "q"), c("assistant", "a"), c("observation", "o"), c("assistant", "b")]},
        [("user", "", "q", False), ("assistant", "", "a", True), ("observation", "", "o", True), ("assistant", "", "b", True)]),
    "explicit-loss": (
        {"conversations": [c("system", "s", loss=True), c("user", "q", loss=True), c("assistant", "a", loss=False),
                           {**TOOL, "loss": False}, c("observation", "o", loss=False), c("assistant", "b")]},
        [("system", "", "s", True), ("user", "", "q", True), ("assistant", "", "a", False),
         ("assistant", "get_weather", CALL_TEXT, False), ("observation", "", OBSERVATION, False),
         ("observation", "", "o", False), ("assistant", "", "b", True)]),
    "chinese-emoji": ({"conversations": [c("user", "今天心情不好😢（微微皱眉）"), c("assistant", "抱抱你🤗！\n想聊聊吗？🌈")]},
                      [("user", "", "今天心情不好😢（微微皱眉）", False), ("assistant", "", "抱抱你🤗！\n想聊聊吗？🌈", True)]),
}


@cache
def _tokenizer() -> Any:
    return load_chatglm3_tokenizer(shared_data("tokenizers/chatglm3-6b/tokenizer.model").parent)


@cache
def _sp_encode() -> Any:
    spm = pytest.importorskip("sentencepiece", reason="sentencepiece is the ChatGLM3 reference encoder")
    return spm.SentencePieceProcessor(model_file=str(shared_data("tokenizers/chatglm3-6b/tokenizer.model"))).encode


def project(canonical: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    ids, labels, _ = encode_conversation(_tokenizer(), CHATGLM3, canonical)
    return ids, labels


@pytest.mark.parametrize("name", CASES)
def test_table_matches_the_hand_written_official_text(name: str) -> None:
    record, segments = CASES[name]
    assert project(CONVERTERS["chatglm3"](record, {})) == chatglm3_ids(_sp_encode(), segments)


@pytest.mark.parametrize("name", CASES)
def test_hand_written_text_is_what_the_official_procedure_builds(name: str) -> None:
    """The table agrees with preprocess_utils.py's format_conversation (README's loss rule; see official_reference)."""
    record, segments = CASES[name]
    assert chatglm3_segments(record) == segments


def test_tools_only_record_starts_with_the_official_sentence() -> None:
    """No bare "\\n[" after <|system|>: the tools message is the intro sentence then the JSON."""
    ids, _ = project(CONVERTERS["chatglm3"](CASES["tools-only"][0], {}))
    header = [64790, 64792, 64794, *_sp_encode()("\n")]
    assert ids[:len(header)] == header
    assert _tokenizer().decode(ids[len(header):len(header) + 8]).startswith("Answer the following questions")


def test_parameters_given_as_a_json_string_render_as_the_object() -> None:
    """A string that parses as a JSON object is that object (the demo itself would fail on a string)."""
    record = CASES["tools-only"][0]
    as_string = {**record, "conversations": [record["conversations"][0], {**TOOL, "parameters": '{"city": "北京"}'},
                                             record["conversations"][2]]}
    assert project(CONVERTERS["chatglm3"](as_string, {})) == chatglm3_ids(_sp_encode(), CASES["tools-only"][1])


def test_function_call_text_is_written_as_the_demo_writes_it() -> None:
    """preprocess_utils.py format_function_call: keyword arguments, repr of each value."""
    assert format_function_call("tool_call", {"city": "北京", "n": 2, "x": None, "l": ["a"]}) == \
        "tool_call(city='北京', n=2, x=None, l=['a'])"


# --- real data -----------------------------------------------------------------------------------

def _glaive() -> list[tuple[str, Any, dict[str, Any]]]:
    fmt, options = from_dataset_info(shared_data("llamafactory/dataset_info.json"), "glaive_toolcall_zh_demo")
    rows = glaive_tool_rows(shared_data("llamafactory/glaive_toolcall_zh_demo.json"), 50)
    assert len(rows) == 50
    return [(f"glaive row {index}", CONVERTERS[fmt](row, options), glaive_as_chatglm3(row)) for index, row in rows]


def _emollm() -> list[tuple[str, Any, dict[str, Any]]]:
    samples = []
    for name in ("data.json", "aiwei.json", "tiangou.json"):
        for index, row in emollm_multiturn_rows(shared_data(f"EmoLLM/{name}"), 20):
            samples.append((f"EmoLLM {name} {index}", CONVERTERS["emollm"](row, {}), {"conversations": emollm_messages(row)}))
    return samples


def _advertisegen() -> list[tuple[str, Any, dict[str, Any]]]:
    rows = json_lines(shared_data("chatglm3/AdvertiseGen_fix_dev.json"), 50)  # the ChatGLM3 demo's own file
    return [(f"AdvertiseGen_fix dev {index}", CONVERTERS["chatglm3"](row, {}), row) for index, row in rows]


def test_the_reference_is_what_the_trained_answer_decodes_to() -> None:
    """The evaluation scores a prediction against the answer's ids decoded, as the demo's compute_metrics decodes its
    label ids: build_single_message's ids after the role token, sp.encode(f"{metadata}\\n") + sp.encode(text), by
    sentencepiece's own decode. A call's two pieces, encoded apart, decode with a space between them."""
    spm = pytest.importorskip("sentencepiece", reason="sentencepiece is the ChatGLM3 reference encoder")
    sp = spm.SentencePieceProcessor(model_file=str(shared_data("tokenizers/chatglm3-6b/tokenizer.model")))

    def official(metadata: str, text: str) -> str:
        return str(sp.decode(sp.encode(f"{metadata}\n") + sp.encode(text))).strip()

    conversation = CONVERTERS["chatglm3"](CASES["tools-only"][0], {})
    call = next(message for message in conversation if message.get("metadata"))
    assert reference_answer(_tokenizer(), CHATGLM3, call) == official("get_weather", CALL_TEXT) == "get_weather\n " + CALL_TEXT
    final = split_for_generation(conversation)[1]
    assert reference_answer(_tokenizer(), CHATGLM3, final) == official("", "北京晴，25度。") == "北京晴，25度。"


SOURCES = {"glaive": _glaive, "emollm": _emollm, "advertisegen": _advertisegen}


@pytest.mark.parametrize("source", SOURCES)
def test_real_conversations_match_the_official_procedure(source: str) -> None:
    for where, canonical, record in SOURCES[source]():
        assert project(canonical) == chatglm3_ids(_sp_encode(), chatglm3_segments(record)), where


def python_calls(canonical: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A call's content in ChatGLM3's own form, which the saved template writes as given."""
    return [{**msg, "content": "```python\n" + format_function_call("tool_call", json.loads(msg["content"])) + "\n```"}
            if msg["role"] == "assistant" and msg.get("metadata") else msg for msg in canonical]


@pytest.mark.parametrize("source", [*SOURCES, "table"])
def test_saved_chat_template_renders_the_encoders_ids(source: str, tmp_path: Path) -> None:
    """The template saved with the tokenizer (and so with an export) gives the ids training and generation use."""
    _tokenizer().save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.chat_template == CHATGLM3.jinja()
    samples = ([(name, CONVERTERS["chatglm3"](record, {})) for name, (record, _) in CASES.items()]
               if source == "table" else [(where, canonical) for where, canonical, _ in SOURCES[source]()])
    for where, canonical in samples:
        ids, _ = project(canonical)
        rendered = python_calls(canonical)
        text = loaded.apply_chat_template(rendered, tokenize=False)
        prompt = loaded.apply_chat_template(rendered[:-1], tokenize=False, add_generation_prompt=True)
        assert loaded.encode(text, add_special_tokens=False) + [loaded.eos_token_id] == ids, where
        assert loaded.encode(prompt, add_special_tokens=False) == encode_prompt(_tokenizer(), CHATGLM3, canonical[:-1]), where
