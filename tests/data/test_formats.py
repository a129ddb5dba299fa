"""The source-format converters on hand-written records: exact canonical messages (malformed records:
test_malformed_records.py)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from conftest import REPO
from helpers.formats import OPENAI_TOOLS, TOOLS, TOOLS_JSON, A, O, S, U, convert, turn

from glmtune.data.conversation import InvalidRecord
from glmtune.data.formats import CONVERTERS

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
