"""The source-format converters on hand-written records: exact canonical messages, and every malformed case's reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from conftest import REPO

from glmtune.data.conversation import InvalidRecord, validate_conversation
from glmtune.data.formats import CONVERTERS

TOOLS = [{"name": "get_weather", "description": "查询天气", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]
TOOLS_JSON = json.dumps(TOOLS, ensure_ascii=False)
OPENAI_TOOLS = [{"type": "function", "function": TOOLS[0]}]


def convert(fmt: str, record: Any, **options: Any) -> list[dict[str, Any]]:
    """What convert_file does per record: the converter, then the canonical checks."""
    messages = CONVERTERS[fmt](record, options)
    validate_conversation(messages)
    return messages


def S(content: str, tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"role": "system", "content": content, "loss": False, **({"tools": tools} if tools else {})}


def U(content: str) -> dict[str, Any]:
    return {"role": "user", "content": content, "loss": False}


def A(content: str, loss: bool = True, metadata: str | None = None) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "loss": loss, **({"metadata": metadata} if metadata else {})}


def O(content: str) -> dict[str, Any]:  # noqa: E743
    return {"role": "observation", "content": content, "loss": False}


def test_schema_format_enum_is_the_converter_registry() -> None:
    """The schema cannot read Python: datasets.<name>.format must offer exactly the registered converters."""
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text(encoding="utf-8"))
    enum = schema["properties"]["datasets"]["additionalProperties"]["properties"]["format"]["enum"]
    assert len(enum) == len(set(enum)) and set(enum) == set(CONVERTERS)


def test_every_converter_option_has_its_schema_key_and_settings_fields() -> None:
    """A key registered as a converter's option reaches it only through the schema, ConvertSettings and
    DatasetSettings: one left out was refused with a message naming none of them, or accepted and never handed on."""
    import dataclasses

    from glmtune.data.formats import option_keys
    from glmtune.data_settings import ConvertSettings, DatasetSettings

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text(encoding="utf-8"))
    properties = schema["properties"]["datasets"]["additionalProperties"]["properties"]
    for settings in (ConvertSettings, DatasetSettings):
        assert set(option_keys()) <= {field.name for field in dataclasses.fields(settings)}
    assert option_keys() == ("columns", "tags") and set(option_keys()) <= set(properties)


# --- glm4 -------------------------------------------------------------------------------------------

def test_glm4_plain() -> None:
    record = {"messages": [{"role": "user", "content": "类型#裤"}, {"role": "assistant", "content": "一条裤子"}]}
    assert convert("glm4", record) == [U("类型#裤"), A("一条裤子")]


def test_glm4_tools_on_empty_system_and_a_tool_call_as_in_the_demo() -> None:
    call = '{"name": "get_weather", "arguments": {"city": "北京"}}'
    record = {"messages": [
        {"role": "system", "content": "", "tools": TOOLS},
        {"role": "user", "content": "北京天气？"},
        {"role": "assistant", "content": call},
        {"role": "observation", "content": '{"temp": 25}'},
        {"role": "assistant", "content": "北京25度"},
    ]}
    assert convert("glm4", record) == [S("", TOOLS), U("北京天气？"), A(call), O('{"temp": 25}'), A("北京25度")]


def test_glm4_openai_style_tools_are_normalised_to_plain_functions() -> None:
    record = {"messages": [{"role": "system", "content": "", "tools": OPENAI_TOOLS},
                           {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert convert("glm4", record) == [S("", TOOLS), U("q"), A("a")]


def test_glm4_system_text_tools_metadata_loss_and_tool_role() -> None:
    record = {"messages": [
        {"role": "system", "content": "你是助手", "tools": TOOLS},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1", "loss": False},
        {"role": "user", "content": "北京天气？"},
        {"role": "assistant", "content": '{"city": "北京"}', "metadata": "get_weather"},
        {"role": "tool", "content": "晴"},
        {"role": "assistant", "content": "晴天"},
    ]}
    assert convert("glm4", record) == [
        S("你是助手", TOOLS), U("q1"), A("a1", loss=False), U("北京天气？"),
        A('{"city": "北京"}', metadata="get_weather"), O("晴"), A("晴天"),
    ]


def test_glm4_empty_tools_on_a_user_message_are_ignored() -> None:
    record = {"messages": [{"role": "user", "content": "q", "tools": []}, {"role": "assistant", "content": "a"}]}
    assert convert("glm4", record) == [U("q"), A("a")]


# --- alpaca -----------------------------------------------------------------------------------------

def test_alpaca_instruction_and_input_are_joined() -> None:
    record = {"instruction": "将以下罗马数字转换为阿拉伯数字。", "input": "输入：XIV", "output": "输出：14"}
    assert convert("alpaca", record) == [U("将以下罗马数字转换为阿拉伯数字。\n输入：XIV"), A("输出：14")]


@pytest.mark.parametrize("record", [
    {"instruction": "你好", "input": "", "output": "您好"},
    {"instruction": "你好", "output": "您好"},
    {"instruction": "你好", "input": None, "output": "您好"},
    {"instruction": "", "input": "你好", "output": "您好"},
], ids=["empty-input", "no-input", "null-input", "input-only"])
def test_alpaca_single_part_prompt(record: dict[str, Any]) -> None:
    assert convert("alpaca", record) == [U("你好"), A("您好")]


def test_alpaca_system_and_history_come_first_and_history_answers_are_trained() -> None:
    record = {"instruction": "q3", "input": "x", "output": "a3", "system": "你是助手", "history": [["q1", "a1"], ["q2", "a2"]]}
    assert convert("alpaca", record) == [S("你是助手"), U("q1"), A("a1"), U("q2"), A("a2"), U("q3\nx"), A("a3")]


def test_alpaca_tools_list_or_json_string() -> None:
    for tools in (TOOLS, TOOLS_JSON, OPENAI_TOOLS):
        record = {"instruction": "q", "output": "a", "system": "s", "tools": tools}
        assert convert("alpaca", record) == [S("s", TOOLS), U("q"), A("a")]
    assert convert("alpaca", {"instruction": "q", "output": "a", "tools": TOOLS}) == [S("", TOOLS), U("q"), A("a")]
    assert convert("alpaca", {"instruction": "q", "output": "a", "tools": "[]"}) == [U("q"), A("a")]


def test_alpaca_columns_rename_keys_and_a_null_column_is_not_read() -> None:
    columns = {"prompt": "question", "query": None, "response": "answer", "system": "sys", "history": "turns"}
    record = {"question": "q2", "input": "ignored", "answer": "a2", "sys": "s", "turns": [["q1", "a1"]], "system": "ignored too"}
    assert convert("alpaca", record, columns=columns) == [S("s"), U("q1"), A("a1"), U("q2"), A("a2")]


def test_alpaca_partial_columns_keep_the_other_defaults() -> None:
    record = {"instruction": "q", "input": "x", "target": "a"}
    assert convert("alpaca", record, columns={"response": "target"}) == [U("q\nx"), A("a")]


# --- prompt_completion ------------------------------------------------------------------------------

def test_prompt_completion() -> None:
    assert convert("prompt_completion", {"prompt": "1+1=", "completion": "2"}) == [U("1+1="), A("2")]


# --- emollm -----------------------------------------------------------------------------------------

def test_emollm_system_on_first_turn_and_every_answer_trained() -> None:
    record = {"conversation": [{"system": "你是心理专家", "input": "我很焦虑", "output": "慢慢说"}, {"input": "睡不着", "output": "试试放松"}]}
    assert convert("emollm", record) == [S("你是心理专家"), U("我很焦虑"), A("慢慢说"), U("睡不着"), A("试试放松")]


def test_emollm_without_system() -> None:
    record = {"conversation": [{"input": "请介绍一下你自己", "output": "我是艾仁医生"}]}
    assert convert("emollm", record) == [U("请介绍一下你自己"), A("我是艾仁医生")]


def test_emollm_empty_first_system_is_dropped() -> None:
    assert convert("emollm", {"conversation": [{"system": "", "input": "q", "output": "a"}]}) == [U("q"), A("a")]


@pytest.mark.parametrize("later", [None, ""], ids=["null", "empty"])
def test_emollm_null_or_empty_system_on_a_later_turn_is_absent(later: str | None) -> None:
    """As the same rows read from Parquet, whose struct column gives every turn a null `system` (polars'
    write_ndjson writes it as null)."""
    record = {"conversation": [{"system": "s", "input": "q", "output": "a"}, {"system": later, "input": "q2", "output": "b"}]}
    assert convert("emollm", record) == [S("s"), U("q"), A("a"), U("q2"), A("b")]


# --- sharegpt ---------------------------------------------------------------------------------------

def turn(tag: str, value: Any) -> dict[str, Any]:
    return {"from": tag, "value": value}


def test_sharegpt_plain_multi_turn_with_system_column() -> None:
    record = {"conversations": [turn("human", "q1"), turn("gpt", "a1"), turn("human", "q2"), turn("gpt", "a2")], "system": "s"}
    assert convert("sharegpt", record) == [S("s"), U("q1"), A("a1"), U("q2"), A("a2")]


def test_sharegpt_tool_call_with_json_string_tools() -> None:
    record = {"conversations": [
        turn("human", "北京天气？"),
        turn("function_call", '{"name": "get_weather", "arguments": {"city": "北京"}}'),
        turn("observation", '{"temp": 25}'),
        turn("gpt", "北京25度"),
    ], "tools": TOOLS_JSON}
    assert convert("sharegpt", record) == [
        S("", TOOLS), U("北京天气？"), A('{"city": "北京"}', metadata="get_weather"), O('{"temp": 25}'), A("北京25度"),
    ]


@pytest.mark.parametrize("tools", ["[]", "", [], None])
def test_sharegpt_no_tools(tools: Any) -> None:
    record = {"conversations": [turn("human", "q"), turn("gpt", "a")], "tools": tools}
    assert convert("sharegpt", record) == [U("q"), A("a")]


def test_sharegpt_system_text_then_tools_list() -> None:
    record = {"conversations": [turn("human", "q"), turn("gpt", "a")], "system": "你是助手", "tools": TOOLS}
    assert convert("sharegpt", record) == [S("你是助手", TOOLS), U("q"), A("a")]


@pytest.mark.parametrize("column", [{}, {"system": "s"}, {"system": ""}])
def test_sharegpt_leading_system_message_is_the_system_prompt(column: dict[str, str]) -> None:
    record = {"conversations": [turn("system", "s"), turn("human", "q"), turn("gpt", "a")], **column}
    assert convert("sharegpt", record) == [S("s"), U("q"), A("a")]


def test_sharegpt_system_turn_and_system_column_that_differ_are_refused_not_one_dropped() -> None:
    """LLaMA-Factory keeps the turn and drops the column's text without a word; which was meant cannot be told."""
    record = {"conversations": [turn("system", "s"), turn("human", "q"), turn("gpt", "a")], "system": "other"}
    with pytest.raises(InvalidRecord, match="message 0: a system turn and a 'system' column with other text"):
        convert("sharegpt", record)


def test_sharegpt_function_call_arguments_string_and_single_item_list() -> None:
    record = {"conversations": [
        turn("human", "q"), turn("function_call", '{"name": "f", "arguments": "{\\"x\\": 1}"}'), turn("observation", "r1"),
        turn("function_call", '[{"name": "g"}]'), turn("observation", "r2"), turn("gpt", "done"),
    ]}
    assert convert("sharegpt", record) == [U("q"), A('{"x": 1}', metadata="f"), O("r1"), A("{}", metadata="g"), O("r2"), A("done")]


def test_sharegpt_columns_and_tags_as_in_dataset_info() -> None:
    record = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    options = {"columns": {"messages": "messages"},
               "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}
    assert convert("sharegpt", record, **options) == [S("s"), U("q"), A("a")]


# --- chatglm3 type checks (the rest is in test_convert.py) -------------------------------------------

def test_chatglm3_metadata_kept() -> None:
    record = {"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "metadata": "m"}]}
    assert convert("chatglm3", record) == [U("q"), A("a", metadata="m")]


# --- malformed records --------------------------------------------------------------------------------

def msgs(*turns: Any) -> dict[str, Any]:
    return {"messages": list(turns)}


def conv(*turns: Any) -> dict[str, Any]:
    return {"conversations": list(turns)}


UQ, AA = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}
HQ, GA = turn("human", "q"), turn("gpt", "a")
CALL = turn("function_call", '{"name": "f", "arguments": {}}')

# (format, record, options, reason substring)
MALFORMED = [
    pytest.param("glm4", [UQ, AA], {}, "record is a list, not an object", id="glm4-record-list"),
    pytest.param("glm4", {"conversations": [UQ, AA]}, {}, "missing key 'messages'", id="glm4-no-messages"),
    pytest.param("glm4", {"messages": "q"}, {}, "'messages' is a string, not a list", id="glm4-messages-str"),
    pytest.param("glm4", msgs(), {}, "conversation is empty", id="glm4-empty"),
    pytest.param("glm4", msgs("q", AA), {}, "message 0 is a string, not an object", id="glm4-message-str"),
    pytest.param("glm4", msgs({"content": "q"}, AA), {}, "message 0: missing key 'role'", id="glm4-no-role"),
    pytest.param("glm4", msgs({"role": 1, "content": "q"}, AA), {}, "message 0: 'role' is a number, not a string", id="glm4-role-int"),
    pytest.param("glm4", msgs({"role": "bot", "content": "q"}, AA), {}, "message 0: unknown role 'bot'", id="glm4-unknown-role"),
    pytest.param("glm4", msgs({"role": "user"}, AA), {}, "message 0: missing key 'content'", id="glm4-no-content"),
    pytest.param("glm4", msgs(UQ, {"role": "assistant", "content": ["a"]}), {}, "message 1: 'content' is a list, not a string", id="glm4-content-list"),
    pytest.param("glm4", msgs(UQ, {"role": "assistant", "content": None}), {}, "message 1: 'content' is null, not a string", id="glm4-content-null"),
    pytest.param("glm4", msgs({"role": "user", "content": "q", "tools": TOOLS}, AA), {}, "message 0: 'tools' on a user message", id="glm4-tools-on-user"),
    pytest.param("glm4", msgs({"role": "system", "content": "", "tools": {"name": "f"}}, UQ, AA), {}, "message 0: 'tools' is an object, not a list", id="glm4-tools-dict"),
    pytest.param("glm4", msgs(UQ, {**AA, "loss": "yes"}), {}, "message 1: 'loss' is a string, not true or false", id="glm4-loss-str"),
    pytest.param("glm4", msgs(UQ, {**AA, "metadata": 3}), {}, "message 1: 'metadata' is a number, not a string", id="glm4-metadata-int"),
    pytest.param("glm4", msgs(UQ, {"role": "system", "content": "s"}, AA), {}, "message 1: system message after a user message", id="glm4-late-system"),
    pytest.param("glm4", msgs(UQ, {"role": "assistant", "content": " "}), {}, "empty assistant message", id="glm4-empty-answer"),
    pytest.param("glm4", msgs(UQ), {}, "no trained assistant message", id="glm4-no-answer"),

    pytest.param("alpaca", "q", {}, "record is a string, not an object", id="alpaca-record-str"),
    pytest.param("alpaca", {"instruction": "q"}, {}, "missing key 'output'", id="alpaca-no-output"),
    pytest.param("alpaca", {"instruction": "q", "output": 3}, {}, "'output' is a number, not a string", id="alpaca-output-int"),
    pytest.param("alpaca", {"instruction": "q", "output": None}, {}, "'output' is null, not a string", id="alpaca-output-null"),
    pytest.param("alpaca", {"instruction": ["q"], "output": "a"}, {}, "'instruction' is a list, not a string", id="alpaca-instruction-list"),
    pytest.param("alpaca", {"instruction": "q", "input": 5, "output": "a"}, {}, "'input' is a number, not a string", id="alpaca-input-int"),
    pytest.param("alpaca", {"instruction": "", "input": "", "output": "a"}, {}, "'instruction' and 'input' empty or missing", id="alpaca-empty-prompt"),
    pytest.param("alpaca", {"output": "a"}, {}, "'instruction' and 'input' empty or missing", id="alpaca-no-prompt"),
    pytest.param("alpaca", {"instruction": "q", "output": ""}, {}, "empty assistant message", id="alpaca-empty-output"),
    pytest.param("alpaca", {"instruction": "q", "output": "a", "system": 1}, {}, "'system' is a number, not a string", id="alpaca-system-int"),
    pytest.param("alpaca", {"instruction": "q", "output": "a", "history": "q0"}, {}, "'history' is a string, not a list", id="alpaca-history-str"),
    pytest.param("alpaca", {"instruction": "q", "output": "a", "history": [["q0"]]}, {}, "'history' item 0 is not a [question, answer] pair", id="alpaca-history-short"),
    pytest.param("alpaca", {"instruction": "q", "output": "a", "history": [["q0", "a0"], ["q1", 2]]}, {}, "'history' item 1 is not a [question, answer] pair", id="alpaca-history-int"),
    pytest.param("alpaca", {"instruction": "q", "output": "a", "tools": "[{"}, {}, "'tools' is a string but not valid JSON", id="alpaca-tools-bad-json"),
    pytest.param("alpaca", {"instruction": "q", "output": "a", "tools": '{"name": "f"}'}, {}, "'tools' is an object, not a list", id="alpaca-tools-json-dict"),
    pytest.param("alpaca", {"question": "q", "output": "a"}, {"columns": {"prompt": "question", "response": "answer"}}, "missing key 'answer'", id="alpaca-column-missing"),

    pytest.param("prompt_completion", {"prompt": "p"}, {}, "missing key 'completion'", id="pc-no-completion"),
    pytest.param("prompt_completion", {"completion": "c"}, {}, "missing key 'prompt'", id="pc-no-prompt"),
    pytest.param("prompt_completion", {"prompt": None, "completion": "c"}, {}, "'prompt' is null, not a string", id="pc-prompt-null"),
    pytest.param("prompt_completion", {"prompt": "p", "completion": 2}, {}, "'completion' is a number, not a string", id="pc-completion-int"),
    pytest.param("prompt_completion", 7, {}, "record is a number, not an object", id="pc-record-int"),

    pytest.param("emollm", {"conversations": []}, {}, "missing key 'conversation'", id="emollm-no-conversation"),
    pytest.param("emollm", {"conversation": {"input": "q", "output": "a"}}, {}, "'conversation' is an object, not a list", id="emollm-conversation-dict"),
    pytest.param("emollm", {"conversation": []}, {}, "conversation is empty", id="emollm-empty"),
    pytest.param("emollm", {"conversation": ["q"]}, {}, "turn 0 is a string, not an object", id="emollm-turn-str"),
    pytest.param("emollm", {"conversation": [{"output": "a"}]}, {}, "turn 0: missing key 'input'", id="emollm-no-input"),
    pytest.param("emollm", {"conversation": [{"input": "q", "output": "a"}, {"input": "q"}]}, {}, "turn 1: missing key 'output'", id="emollm-no-output"),
    pytest.param("emollm", {"conversation": [{"input": "q", "output": "a"}, {"input": "q", "output": 1}]}, {}, "turn 1: 'output' is a number, not a string", id="emollm-output-int"),
    pytest.param("emollm", {"conversation": [{"system": ["s"], "input": "q", "output": "a"}]}, {}, "turn 0: 'system' is a list, not a string", id="emollm-system-list"),
    pytest.param("emollm", {"conversation": [{"input": "q", "output": "a"}, {"system": "s", "input": "q", "output": "a"}]}, {},
                 "turn 1: 'system' after the first turn", id="emollm-late-system"),
    pytest.param("emollm", {"conversation": [{"input": "q", "output": ""}]}, {}, "empty assistant message", id="emollm-empty-output"),

    pytest.param("sharegpt", {"messages": [HQ, GA]}, {}, "missing key 'conversations'", id="sharegpt-no-conversations"),
    pytest.param("sharegpt", {"conversations": "q"}, {}, "'conversations' is a string, not a list", id="sharegpt-conversations-str"),
    pytest.param("sharegpt", conv(), {}, "conversation is empty", id="sharegpt-empty"),
    pytest.param("sharegpt", conv("q", GA), {}, "message 0 is a string, not an object", id="sharegpt-message-str"),
    pytest.param("sharegpt", conv({"value": "q"}, GA), {}, "message 0: missing key 'from'", id="sharegpt-no-from"),
    pytest.param("sharegpt", conv({"from": "human"}, GA), {}, "message 0: missing key 'value'", id="sharegpt-no-value"),
    pytest.param("sharegpt", conv(turn("human", 1), GA), {}, "message 0: 'value' is a number, not a string", id="sharegpt-value-int"),
    pytest.param("sharegpt", conv(turn("bot", "q"), GA), {}, "message 0: unknown from 'bot'", id="sharegpt-unknown-tag"),
    pytest.param("sharegpt", conv(GA, HQ), {}, "message 0: 'gpt' out of turn (expected 'human' or 'observation'", id="sharegpt-starts-with-gpt"),
    pytest.param("sharegpt", conv(HQ, HQ, GA), {}, "message 1: 'human' out of turn (expected 'gpt' or 'function_call'", id="sharegpt-two-humans"),
    pytest.param("sharegpt", conv(HQ, GA, turn("system", "s"), GA), {}, "message 2: 'system' out of turn", id="sharegpt-late-system"),
    pytest.param("sharegpt", conv(HQ, GA, HQ), {}, "the last message is 'human'; a conversation ends with an assistant turn", id="sharegpt-ends-with-human"),
    pytest.param("sharegpt", conv(HQ, GA, turn("observation", "r"), GA), {}, "message 2: observation without a preceding function_call", id="sharegpt-orphan-observation"),
    pytest.param("sharegpt", conv(turn("observation", "r"), GA), {}, "message 0: observation without a preceding function_call", id="sharegpt-observation-first"),
    pytest.param("sharegpt", conv(HQ, turn("function_call", "f(x=1)"), turn("observation", "r"), GA), {}, "message 1: function call is not valid JSON", id="sharegpt-call-not-json"),
    pytest.param("sharegpt", conv(HQ, turn("function_call", '{"arguments": {}}'), turn("observation", "r"), GA), {},
                 "message 1: function call is not one {\"name\", \"arguments\"} object with a string 'name'", id="sharegpt-call-no-name"),
    pytest.param("sharegpt", conv(HQ, turn("function_call", '[{"name": "f"}, {"name": "g"}]'), turn("observation", "r"), GA), {},
                 "message 1: function call is not one", id="sharegpt-parallel-calls"),
    pytest.param("sharegpt", {**conv(HQ, GA), "tools": 3}, {}, "'tools' is a number, not a list", id="sharegpt-tools-int"),
    pytest.param("sharegpt", {**conv(HQ, GA), "tools": "[{'name': 'f'}]"}, {}, "'tools' is a string but not valid JSON", id="sharegpt-tools-bad-json"),
    pytest.param("sharegpt", {**conv(HQ, GA), "system": ["s"]}, {}, "'system' is a list, not a string", id="sharegpt-system-list"),
    pytest.param("sharegpt", conv(HQ, turn("gpt", "")), {}, "empty assistant message", id="sharegpt-empty-answer"),
    pytest.param("sharegpt", {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 2}]},
                 {"columns": {"messages": "messages"}, "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}},
                 "message 1: 'content' is a number, not a string", id="sharegpt-custom-tags-content-int"),

    pytest.param("chatglm3", {"conversations": [UQ, AA], "tools": "f"}, {}, "'tools' is a string, not a list", id="chatglm3-tools-str"),
    pytest.param("chatglm3", conv(UQ, {"role": "tool", "name": 3}), {}, "message 1: 'name' is a number, not a string", id="chatglm3-tool-name-int"),
    pytest.param("chatglm3", {"conversations": [{"role": "system", "content": 1}, UQ, AA], "tools": TOOLS}, {},
                 "message 0: 'content' is a number, not a string", id="chatglm3-system-content-int"),
    pytest.param("chatglm3", conv(UQ, {**AA, "metadata": ["m"]}), {}, "message 1: 'metadata' is a list, not a string", id="chatglm3-metadata-list"),

    # tools: every format checks each tool the same way
    pytest.param("chatglm3", {**conv(UQ, AA), "tools": [{"description": "no name"}]}, {},
                 "tool 0: a function tool needs a non-empty string 'name'", id="chatglm3-tool-without-name"),
    pytest.param("glm4", msgs({"role": "system", "content": "", "tools": [TOOLS[0], {"type": "function", "function": {"name": ""}}]}, UQ, AA), {},
                 "message 0: tool 1: a function tool needs a non-empty string 'name'", id="glm4-openai-tool-empty-name"),
    pytest.param("glm4", msgs({"role": "system", "content": "", "tools": [{"type": "python"}]}, UQ, AA), {},
                 "message 0: tool 0: type 'python' is not a function tool", id="glm4-python-tool"),
    pytest.param("glm4", msgs({"role": "system", "content": "", "tools": [{"type": "function", "function": "f"}]}, UQ, AA), {},
                 "message 0: tool 0: 'function' is a string, not an object", id="glm4-function-str"),
    pytest.param("sharegpt", {**conv(HQ, GA), "tools": '["get_weather"]'}, {}, "tool 0: is a string, not an object", id="sharegpt-tool-str"),
    pytest.param("alpaca", {"instruction": "q", "output": "a", "tools": [{"name": "f", "parameters": "x"}]}, {},
                 "tool 0: 'parameters' is not an object", id="alpaca-tool-parameters-str"),
    pytest.param("alpaca", {"instruction": "q", "output": "a", "tools": [{"name": "f", "description": 1}]}, {},
                 "tool 0: 'description' is not a string", id="alpaca-tool-description-int"),
]


@pytest.mark.parametrize(("fmt", "bad", "options", "reason"), MALFORMED)
def test_malformed_record_reason(fmt: str, bad: Any, options: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        convert(fmt, bad, **options)
    assert reason in str(info.value)


@pytest.mark.parametrize(("conversation", "reason"), [
    ([U("q"), {**A("a"), "tools": TOOLS}], "message 1: only the system message may carry 'tools' (this one is assistant)"),
    ([S("", OPENAI_TOOLS), U("q"), A("a")], "message 0: 'tools' must be a non-empty list of plain function objects"),
    ([S("s", []), U("q"), A("a")], None),  # S() leaves an empty list out
    ([{**S("s"), "tools": []}, U("q"), A("a")], "message 0: 'tools' must be a non-empty list"),
    ([{**S(""), "tools": [{"name": ""}]}, U("q"), A("a")], "message 0: tool 0: a function tool needs a non-empty string 'name'"),
])
def test_canonical_tools_rules(conversation: list[dict[str, Any]], reason: str | None) -> None:
    if reason is None:
        validate_conversation(conversation)
        return
    with pytest.raises(InvalidRecord) as info:
        validate_conversation(conversation)
    assert reason in str(info.value)


@pytest.mark.parametrize(("fmt", "options", "message"), [
    ("alpaca", {"columns": {"messages": "conversations"}}, "option 'columns': unknown key(s) messages"),
    ("alpaca", {"columns": ["instruction"]}, "option 'columns' must be a mapping"),
    ("alpaca", {"columns": {"response": None}}, "option 'columns': response must name a key"),
    ("sharegpt", {"columns": {"messages": ""}}, "option 'columns': messages must name a key"),
    ("sharegpt", {"tags": {"role": "role"}}, "option 'tags': unknown key(s) role"),
    ("sharegpt", {"tags": {"role_tag": None}}, "option 'tags': role_tag must name a key"),
])
def test_bad_options_are_config_errors_not_rejects(fmt: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        CONVERTERS[fmt]({"instruction": "q", "output": "a", "conversations": []}, options)
    assert not isinstance(info.value, InvalidRecord)
