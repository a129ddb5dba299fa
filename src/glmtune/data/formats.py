"""Source formats: each converter maps one raw record to a canonical message list.

Converters are registered by name; a dataset's `format:` in the config picks one. They raise
InvalidRecord with the reason (naming the key); the caller decides whether that stops the job or
becomes a reject. Option errors (a bad `columns:`/`tags:` mapping) raise a plain ValueError.

| format            | record                                                                  | options          |
|-------------------|-------------------------------------------------------------------------|------------------|
| advertisegen      | `{"content", "summary"}`                                                | -                |
| chatglm3          | `{"conversations": [{"role", "content", "loss"?}], "tools"?}`           | -                |
| glm4              | `{"messages": [{"role", "content", "tools"?, "metadata"?, "loss"?}]}`   | -                |
| alpaca            | `{"instruction", "input"?, "output", "system"?, "history"?, "tools"?}`  | columns          |
| prompt_completion | `{"prompt", "completion"}`                                              | -                |
| emollm            | `{"conversation": [{"system"? (first turn only), "input", "output"}]}`  | -                |
| sharegpt          | `{"conversations": [{"from", "value"}], "system"?, "tools"?}`           | columns, tags    |

Tools (a list, or for sharegpt/alpaca also a JSON-encoded string) stay structured: they ride on the
system message as `tools` (plain function objects, see schema.normalize_tools), whose content is the
system text or "". A tool call is an assistant message whose metadata is the function name and whose
content is the arguments as JSON. The chat template renders both in its family's layout (glm4: the
arguments as they are; chatglm3: its own `tool_call(...)` form; see glmtune.chat_template).
Default loss (a message without `loss`) follows each format's own demo: chatglm3 trains every role but
system and user; the others train only assistant messages (GLM-4's demo: system/user/observation untrained).
`from_dataset_info` reads an entry of LLaMA-Factory's dataset_info.json into (format, options).
"""

from __future__ import annotations

import json
from typing import Any

from glmtune.chat_template import CHATGLM3_TOOLS_INTRO
from glmtune.data.conversation import InvalidRecord, kind_of, message, normalize_tools
from glmtune.data.format_registry import (CONVERTER_OPTIONS, CONVERTERS, get_value, option_keys, record_object, register,
                                          system_messages)
from glmtune.data.llamafactory_formats import dataset_info_file, from_dataset_info  # registers alpaca and sharegpt

__all__ = ["CONVERTERS", "CONVERTER_OPTIONS", "dataset_info_file", "from_dataset_info", "option_keys", "register"]


@register("advertisegen")
def advertisegen(record: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """AdvertiseGen `{"content": attributes, "summary": ad text}` -> user / assistant."""
    record = record_object(record)
    return [message("user", get_value(record, "content")), message("assistant", get_value(record, "summary"))]


@register("prompt_completion")
def prompt_completion(record: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """`{"prompt", "completion"}` -> user / assistant (a fixed system prompt comes from options["system"])."""
    record = record_object(record)
    return [message("user", get_value(record, "prompt")), message("assistant", get_value(record, "completion"))]


CHATGLM3_UNTRAINED = ("system", "user")  # the ChatGLM3 finetune README: without `loss`, every other role is trained


def _chatglm3_parameters(turn: dict[str, Any], where: str) -> dict[str, Any]:
    """A tool message's `parameters`: an object, or a string holding a JSON object (parsed, not encoded again). One
    left out is refused, as the demo's `conv["parameters"]` fails on it: read as no arguments, a call to a tool that
    takes some would be trained without them."""
    if "parameters" not in turn:
        raise InvalidRecord(f"{where}tool message without 'parameters': give the call's arguments as an object "
                            "(an empty one, {}, for a tool that takes none)")
    parameters = turn["parameters"]
    if isinstance(parameters, str):
        try:
            parameters = json.loads(parameters)
        except json.JSONDecodeError as err:
            raise InvalidRecord(f"{where}'parameters' is a string but not JSON ({err.msg}); give an object of "
                                "argument names and values, or a string holding one") from None
    if not isinstance(parameters, dict):
        raise InvalidRecord(f"{where}'parameters' is {kind_of(parameters)}, not an object; give an object of "
                            "argument names and values (as tool_call(name=value, ...) takes them)")
    return parameters


def _chatglm3_history_tools(system: dict[str, Any], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tools on the first system message, as ChatGLM3's own chat history holds them: chat() renders the message's
    text, a newline and the tools as JSON, which with the demo's sentence as the text is the finetune demo's tools
    message. Another text would render otherwise than the chatglm3 layout writes it, so it is refused."""
    if tools:
        raise InvalidRecord("message 0: tools given twice, on the record and on its system message: give them once")
    text = get_value(system, "content", str, "message 0: ", required=False) or ""
    if text.strip() and text.strip() != CHATGLM3_TOOLS_INTRO.strip():
        raise InvalidRecord(f"message 0: a system message with tools and its own text ({text[:40]!r}): ChatGLM3's "
                            "chat() writes that text before the tools, where the finetune demo writes its own sentence; "
                            "put the tools on the record (\"tools\") and the text in a system message of its own")
    return normalize_tools(system["tools"], "message 0: ")


def _chatglm3_tool(turn: dict[str, Any], loss: bool | None, where: str) -> list[dict[str, Any]]:
    """A `tool` message -> an assistant call (trained unless `loss` says no) and its observation (never trained)."""
    if not turn.get("name"):
        raise InvalidRecord(f"{where}tool message without a name")
    name = get_value(turn, "name", str, where)
    parameters = json.dumps(_chatglm3_parameters(turn, where), ensure_ascii=False)
    observation = turn.get("observation")  # the demo dumps any non-string (a missing one as null)
    if not isinstance(observation, str):
        observation = json.dumps(observation, ensure_ascii=False)
    return [message("assistant", parameters, loss=True if loss is None else loss, metadata=name),
            message("observation", observation, loss=False)]


@register("chatglm3")
def chatglm3(record: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """ChatGLM3 finetune demo `{"conversations": [...], "tools"?: [...]}`.

    As in the demo (finetune_demo/README.md, preprocess_utils.py): tools ride on the first system message,
    whose text (if the record has one) the chatglm3 template renders as a second system message after the
    tools prompt; a `tool` message becomes an assistant tool call (name as metadata, parameters as JSON
    content: an object, or a string holding a JSON object, which is parsed) followed by an untrained
    observation (a non-string one dumped as JSON); without `loss`, system and user are untrained and every
    other role (assistant, observation) is trained. A given `loss` is honoured on any role.
    """
    record = record_object(record)
    turns = get_value(record, "conversations", object)
    if not isinstance(turns, list):
        raise InvalidRecord("'conversations' is not a list")
    tools = normalize_tools(get_value(record, "tools", list, required=False) or [])
    first = 0  # the turn after a system message holding the tools, which are read here
    if turns and isinstance(turns[0], dict) and turns[0].get("role") == "system" and "tools" in turns[0]:
        tools, first = _chatglm3_history_tools(turns[0], tools), 1
    messages: list[dict[str, Any]] = system_messages(None, tools)
    for position, turn in enumerate(turns[first:], start=first):
        where = f"message {position}: "
        if not isinstance(turn, dict) or "role" not in turn:
            raise InvalidRecord(f"{where}missing key 'role'")
        role, loss = turn["role"], turn.get("loss")
        if loss is not None and not isinstance(loss, bool):
            raise InvalidRecord(f"{where}'loss' must be true or false, got {loss!r}")
        metadata = get_value(turn, "metadata", str, where, required=False)
        if role == "tool":
            messages += _chatglm3_tool(turn, loss, where)
            continue
        if "content" not in turn:
            raise InvalidRecord(f"{where}missing key 'content'")
        if loss is None:
            loss = role not in CHATGLM3_UNTRAINED
        if role == "system" and tools and position == 0:
            # One canonical system message carries the tools and the record's own system text.
            messages[0]["content"] = get_value(turn, "content", str, where)
            messages[0]["loss"] = loss
            continue
        messages.append(message(role, turn["content"], loss, metadata))
    return messages


GLM4_ROLES = ("system", "user", "assistant", "observation", "tool")


@register("glm4")
def glm4(record: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """GLM-4 finetune demo `{"messages": [{"role", "content", "tools"?, "metadata"?, "loss"?}]}`.

    Tools ride on the system message (kept structured); `tool` is read as `observation`;
    metadata (a tool call's function name) is kept; without `loss`, only assistant is trained.
    """
    messages = []
    for position, turn in enumerate(get_value(record_object(record), "messages", list)):
        where = f"message {position}: "
        turn = record_object(turn, f"message {position}")
        role = get_value(turn, "role", str, where)
        if role not in GLM4_ROLES:
            raise InvalidRecord(f"{where}unknown role {role!r} (expected one of {', '.join(GLM4_ROLES)})")
        content = get_value(turn, "content", str, where)
        tools = get_value(turn, "tools", list, where, required=False)
        if tools and role != "system":
            raise InvalidRecord(f"{where}'tools' on a {role} message (GLM-4 reads tools only from the system message)")
        tools = normalize_tools(tools, where) if tools else None
        loss = get_value(turn, "loss", bool, where, required=False)
        metadata = get_value(turn, "metadata", str, where, required=False)
        messages.append(message("observation" if role == "tool" else role, content, loss, metadata, tools))
    return messages


@register("emollm")
def emollm(record: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """EmoLLM / XTuner `{"conversation": [{"system"?, "input", "output"}, ...]}`; system only on the first turn."""
    messages: list[dict[str, Any]] = []
    for position, turn in enumerate(get_value(record_object(record), "conversation", list)):
        where = f"turn {position}: "
        turn = record_object(turn, f"turn {position}")
        # A null or empty one is no system prompt: a table's struct column gives every turn the key (records.py).
        if position and turn.get("system") not in (None, ""):
            raise InvalidRecord(f"{where}'system' after the first turn")
        if system := get_value(turn, "system", str, where, required=False):
            messages.append(message("system", system))
        messages += [message("user", get_value(turn, "input", str, where)), message("assistant", get_value(turn, "output", str, where))]
    return messages
