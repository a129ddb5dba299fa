"""Every malformed record's reason, the canonical tools rules, and bad converter options (config errors, not rejects)."""

from __future__ import annotations

from typing import Any

import pytest
from helpers.formats import OPENAI_TOOLS, TOOLS, A, S, U, convert, turn

from glmtune.data.conversation import InvalidRecord, validate_conversation
from glmtune.data.formats import CONVERTERS


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
