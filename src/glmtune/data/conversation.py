"""The one conversation record every source format is converted into, and its rules.

A canonical record is the ChatGLM3 `conversations` schema, normalised:
`{"conversations": [{"role", "content", "loss", "metadata"?, "tools"?}, ...]}` where role is one of
system / user / assistant / observation and `loss` is always an explicit boolean.
Only a system message may carry `tools`: a non-empty list of function definitions, each a plain
`{"name", "description"?, "parameters"?}` object (an OpenAI-style `{"type": "function", "function": ...}`
is unwrapped to its `function`). The chat template renders them in its family's layout.
(A ChatGLM3 `tool` message is expanded by its converter into an assistant tool call plus an observation.)
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from glmtune.chat_template import tool_function

KINDS = {str: "a string", list: "a list", dict: "an object", bool: "true or false"}


def kind_of(value: Any) -> str:
    """A JSON value's kind in words ("an object", not the dict subclass a record may be read as)."""
    kinds = (*KINDS.items(), (int, "a number"), (float, "a number"))  # bool before int: True is an int
    return next((name for kind, name in kinds if isinstance(value, kind)), "null" if value is None else type(value).__name__)


def is_blank(text: str) -> bool:
    """Whether `text` shows nothing: whitespace, format characters (a zero-width joiner) and variation selectors only,
    what removing an emoji's base character leaves of `❤️` or `👩‍💼` (an answer of them would be trained as one)."""
    return all(char.isspace() or unicodedata.category(char) == "Cf" or _is_variation_selector(char) for char in text)


def _is_variation_selector(char: str) -> bool:
    return "\ufe00" <= char <= "\ufe0f" or "\U000e0100" <= char <= "\U000e01ef"


ROLES = ("system", "user", "assistant", "observation")
# Roles trained when a message carries no `loss` flag: the GLM-4 demo's rule (system/user/observation untrained).
# The chatglm3 converter applies ChatGLM3's own (only system/user untrained) before calling message().
TRAINED_BY_DEFAULT = {"assistant"}


class InvalidRecord(ValueError):
    """A record breaks the schema; the message says why (the caller adds file and record)."""


def message(role: str, content: str, loss: bool | None = None, metadata: str | None = None,
            tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": role, "content": content}
    msg["loss"] = role in TRAINED_BY_DEFAULT if loss is None else loss
    if metadata:
        msg["metadata"] = metadata
    if tools:
        msg["tools"] = tools
    return msg


def normalize_tools(tools: Any, where: str = "") -> list[dict[str, Any]]:
    """Check a tools list and return it as plain function objects; raise InvalidRecord naming the bad tool."""
    if not isinstance(tools, list):
        raise InvalidRecord(f"{where}'tools' is {kind_of(tools)}, not a list")
    functions: list[dict[str, Any]] = []
    named: dict[str, int] = {}  # function name -> the tool that has it
    for index, tool in enumerate(tools):
        at = f"{where}tool {index}: "
        if not isinstance(tool, dict):
            raise InvalidRecord(f"{at}is {kind_of(tool)}, not an object")
        if tool.get("type", "function") != "function":
            raise InvalidRecord(f"{at}type {tool['type']!r} is not a function tool (only function tools are supported)")
        function = tool_function(tool)
        if not isinstance(function, dict):
            raise InvalidRecord(f"{at}'function' is {kind_of(function)}, not an object")
        if not isinstance(function.get("name"), str) or not function["name"].strip():
            raise InvalidRecord(f"{at}a function tool needs a non-empty string 'name'")
        if not isinstance(function.get("description", ""), str):
            raise InvalidRecord(f"{at}'description' is not a string")
        if not isinstance(function.get("parameters", {}), dict):
            raise InvalidRecord(f"{at}'parameters' is not an object")
        if function["name"] in named:
            raise InvalidRecord(f"{at}a second function named {function['name']!r} (tool {named[function['name']]} has "
                                "that name): which one a call means cannot be told")
        named[function["name"]] = index
        functions.append(function)
    return functions


def undeclared_calls(messages: list[dict[str, Any]]) -> list[str]:
    """The functions the conversation's tool calls name that its declared tools do not (none when it declares no
    tools: ChatGLM3's code interpreter is called by name without one). Valid data, but the model learns to call a
    function it was never shown."""
    declared = {tool["name"] for msg in messages if msg["role"] == "system" for tool in msg.get("tools", [])}
    return [msg["metadata"] for msg in messages if declared and msg["role"] == "assistant" and msg.get("metadata")
            and msg["metadata"] not in declared]


def conversation_key(messages: Any) -> str:
    """The identity of a conversation for de-duplication and overlap counts: its messages, key order aside."""
    return json.dumps(messages, ensure_ascii=False, sort_keys=True)


def validate_conversation(conversation: Any) -> None:
    """Raise InvalidRecord unless `conversation` is a well-formed canonical message list."""
    if not isinstance(conversation, list) or not conversation:
        raise InvalidRecord("conversation is empty or not a list of messages")
    seen_user = seen_system = False
    for position, msg in enumerate(conversation):
        where = f"message {position}"
        if not isinstance(msg, dict):
            raise InvalidRecord(f"{where}: not an object")
        if "role" not in msg:
            raise InvalidRecord(f"{where}: missing key 'role'")
        if msg["role"] not in ROLES:
            hint = ("; a ChatGLM3 demo `tool` message (a data format: format chatglm3) is here an assistant message "
                    "with the function's name as `metadata` and the arguments as content, then an `observation` "
                    "with its result") if msg["role"] == "tool" else ""
            raise InvalidRecord(f"{where}: unknown role {msg['role']!r} (expected one of {', '.join(ROLES)}){hint}")
        if "content" not in msg:
            raise InvalidRecord(f"{where}: missing key 'content'")
        role, content = msg["role"], msg["content"]
        if not isinstance(content, str):
            raise InvalidRecord(f"{where}: content is {kind_of(content)}, not a string")
        if "loss" in msg and not isinstance(msg["loss"], bool):
            raise InvalidRecord(f"{where}: 'loss' must be true or false, got {msg['loss']!r}")
        if "tools" in msg:
            if role != "system":
                raise InvalidRecord(f"{where}: only the system message may carry 'tools' (this one is {role})")
            if not msg["tools"] or normalize_tools(msg["tools"], f"{where}: ") != msg["tools"]:
                raise InvalidRecord(f"{where}: 'tools' must be a non-empty list of plain function objects")
        if role == "system":
            if seen_system:
                raise InvalidRecord(f"{where}: a second system message")
            if seen_user:
                raise InvalidRecord(f"{where}: system message after a user message")
            seen_system = True
        elif role == "user":
            seen_user = True
        elif role == "observation" and (position == 0 or conversation[position - 1]["role"] not in ("assistant", "observation")):
            before = f"after a {conversation[position - 1]['role']} message" if position else "as the first message"
            raise InvalidRecord(f"{where}: an observation {before}; an observation is a tool's result and follows the "
                                "assistant message that called it (ChatGLM3's and GLM-4's rule)")
        elif role == "assistant" and is_blank(content):
            if msg.get("metadata"):
                raise InvalidRecord(
                    f"{where}: a tool call to {msg['metadata']!r} with empty arguments: a call's content is its "
                    "arguments as JSON, {} for a call that takes none (GLM-4's chat template writes nothing for an "
                    "empty message, so the call would vanish from training)")
            raise InvalidRecord(f"{where}: empty assistant message")
    if not any(m["role"] == "user" for m in conversation):
        raise InvalidRecord("no user message")
    if not any(m["role"] == "assistant" and m.get("loss", True) for m in conversation):
        raise InvalidRecord("no trained assistant message")
