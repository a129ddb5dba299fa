"""The chatglm3 converter on single records, the expected messages worked out by hand from the ChatGLM3
finetune demo's rules (finetune_demo/README.md, preprocess_utils.py): tools, tool calls and observations, loss flags."""

from __future__ import annotations

from typing import Any

import pytest

from glmtune.data.conversation import InvalidRecord
from glmtune.data.formats import chatglm3

from test_convert import TOOLS, assistant, conv, system, user

def test_chatglm3_tools_and_tool_call() -> None:
    record = {
        "tools": TOOLS,
        "conversations": [
            user("北京天气？"),
            {"role": "tool", "name": "get_weather", "parameters": {"city": "北京"}, "observation": {"temp": 25, "天气": "晴"}},
            assistant("北京晴，25度"),
        ],
    }
    assert chatglm3(record, {}) == [
        {"role": "system", "content": "", "loss": False, "tools": TOOLS},
        {"role": "user", "content": "北京天气？", "loss": False},
        {"role": "assistant", "content": '{"city": "北京"}', "loss": True, "metadata": "get_weather"},
        {"role": "observation", "content": '{"temp": 25, "天气": "晴"}', "loss": False},
        {"role": "assistant", "content": "北京晴，25度", "loss": True},
    ]


def test_chatglm3_string_observation_and_empty_parameters_kept() -> None:
    record = conv(user("q"), {"role": "tool", "name": "now", "parameters": {}, "observation": "12:00"}, assistant("中午"))
    messages = chatglm3(record, {})
    assert messages[1] == {"role": "assistant", "content": "{}", "loss": True, "metadata": "now"}
    assert messages[2] == {"role": "observation", "content": "12:00", "loss": False}


def test_chatglm3_tool_without_parameters_is_refused() -> None:
    """The demo reads conv["parameters"] (a KeyError without it); read as no arguments, a call to a tool that takes
    some would be trained without them."""
    record = conv(user("q"), {"role": "tool", "name": "get_weather", "observation": "晴"}, assistant("晴"))
    with pytest.raises(InvalidRecord, match=r"^message 1: tool message without 'parameters': give the call's arguments "
                                            r"as an object \(an empty one, \{\}, for a tool that takes none\)$"):
        chatglm3(record, {})


def test_chatglm3_system_text_rides_on_the_tools_system_message() -> None:
    """One canonical system message; the chatglm3 template renders the demo's two (see test_parity_chatglm3.py)."""
    record = {"tools": TOOLS, "conversations": [system("你是助手"), user("q"), assistant("a")]}
    messages = chatglm3(record, {})
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[0] == {"role": "system", "content": "你是助手", "loss": False, "tools": TOOLS}


def test_chatglm3_default_loss() -> None:
    """ChatGLM3 finetune_demo/README.md: without `loss`, system and user are untrained, every other role trained."""
    record = conv(system("s"), user("q"), assistant("a"), {"role": "observation", "content": "o"}, assistant("b"))
    assert [m["loss"] for m in chatglm3(record, {})] == [False, False, True, True, True]


@pytest.mark.parametrize("parameters", [{"city": "北京"}, '{"city": "北京"}', ' {"city": "北京"} '], ids=["object", "json-string", "padded"])
def test_chatglm3_tool_parameters_object_or_json_string(parameters: Any) -> None:
    record = conv(user("q"), {"role": "tool", "name": "w", "parameters": parameters, "observation": "晴"}, assistant("a"))
    assert chatglm3(record, {})[1]["content"] == '{"city": "北京"}'  # parsed once, never a JSON string of JSON


@pytest.mark.parametrize("parameters, reason", [
    ("city=北京", "message 1: 'parameters' is a string but not JSON"),
    ('["北京"]', "message 1: 'parameters' is a list, not an object"),
    ('"北京"', "message 1: 'parameters' is a string, not an object"),
    (["北京"], "message 1: 'parameters' is a list, not an object"),
], ids=["not-json", "json-list", "json-string-of-string", "list"])
def test_chatglm3_tool_parameters_rejected_with_the_fix(parameters: Any, reason: str) -> None:
    record = conv(user("q"), {"role": "tool", "name": "w", "parameters": parameters, "observation": "晴"}, assistant("a"))
    with pytest.raises(InvalidRecord, match="give an object of argument names and values") as err:
        chatglm3(record, {})
    assert str(err.value).startswith(reason)


def test_chatglm3_missing_observation_is_dumped_as_null() -> None:
    """preprocess_utils.py: `conv.get('observation', None)`, a non-string dumped with json.dumps."""
    record = conv(user("q"), {"role": "tool", "name": "w", "parameters": {}}, assistant("a"))
    assert chatglm3(record, {})[2] == {"role": "observation", "content": "null", "loss": False}


def test_chatglm3_explicit_loss_is_respected() -> None:
    record = conv(
        system("s", loss=True),
        user("q", loss=True),
        assistant("a", loss=False),
        {"role": "tool", "name": "f", "parameters": {}, "observation": "r", "loss": False},
        {"role": "observation", "content": "o", "loss": True},
        assistant("b", loss=True),
    )
    messages = chatglm3(record, {})
    assert [(m["role"], m["loss"]) for m in messages] == [
        ("system", True), ("user", True), ("assistant", False), ("assistant", False),
        ("observation", False), ("observation", True), ("assistant", True),
    ]


def test_a_reason_names_the_json_kind_not_the_class_records_are_read_as() -> None:
    """The convert stage reads records as tracked dicts (glmtune.data.unread): a reason said "TrackedDict"."""
    from glmtune.data.unread import tracked

    with pytest.raises(InvalidRecord, match=r"'tools' is an object, not a list"):
        chatglm3(tracked({"tools": {"name": "x"}, "conversations": [user("q"), assistant("a")]}), {})


def test_tools_on_the_system_message_as_chatglm3s_chat_history_holds_them() -> None:
    """chat() renders such a message as its text + "\\n" + the tools' JSON: with the demo's sentence as the text,
    the finetune demo's tools message. They were dropped with only an unread-keys warning."""
    from glmtune.chat_template import CHATGLM3_TOOLS_INTRO

    on_record = chatglm3({"tools": TOOLS, "conversations": [user("q"), assistant("a")]}, {})
    for text in (CHATGLM3_TOOLS_INTRO.strip(), ""):
        history = {"conversations": [{"role": "system", "content": text, "tools": TOOLS}, user("q"), assistant("a")]}
        assert chatglm3(history, {}) == on_record
    with pytest.raises(InvalidRecord, match=r"^message 0: a system message with tools and its own text \('你是助手'\)"):
        chatglm3({"conversations": [{"role": "system", "content": "你是助手", "tools": TOOLS}, user("q"), assistant("a")]}, {})
    with pytest.raises(InvalidRecord, match="^message 0: tools given twice, on the record and on its system message"):
        chatglm3({"tools": TOOLS, "conversations": [{"role": "system", "content": "", "tools": TOOLS}, user("q"), assistant("a")]}, {})
    bad = {"conversations": [{"role": "system", "content": "", "tools": TOOLS}, user("q"), assistant("a", loss="yes")]}
    with pytest.raises(InvalidRecord, match="^message 2: 'loss' must be true or false"):  # places in the record's list
        chatglm3(bad, {})
