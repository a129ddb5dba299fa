"""Source formats: each converter maps one raw record to a canonical message list.

Converters are registered by name; a dataset's `format:` in the config picks one. They raise
InvalidRecord with the reason; the caller decides whether that stops the job or becomes a reject.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .schema import InvalidRecord, message

Converter = Callable[[Any, dict[str, Any]], list[dict[str, Any]]]
CONVERTERS: dict[str, Converter] = {}


def register(name: str) -> Callable[[Converter], Converter]:
    def add(func: Converter) -> Converter:
        CONVERTERS[name] = func
        return func

    return add


def _require(record: Any, *keys: str) -> None:
    if not isinstance(record, dict):
        raise InvalidRecord(f"record is {type(record).__name__}, not an object")
    for key in keys:
        if key not in record:
            raise InvalidRecord(f"missing key '{key}'")


def _text(record: dict[str, Any], key: str) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise InvalidRecord(f"'{key}' is {type(value).__name__}, not a string")
    return value


@register("advertisegen")
def advertisegen(record: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """AdvertiseGen `{"content": attributes, "summary": ad text}` -> user / assistant."""
    _require(record, "content", "summary")
    return [message("user", _text(record, "content")), message("assistant", _text(record, "summary"))]


@register("chatglm3")
def chatglm3(record: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """ChatGLM3 finetune demo `{"conversations": [...], "tools"?: [...]}`.

    As in the demo: tools become the first system prompt (json.dumps, ensure_ascii=False); a `tool`
    message becomes an assistant tool call (name as metadata, parameters as content) followed by an
    untrained observation; without `loss`, system/user/observation are untrained, the rest trained.
    """
    _require(record, "conversations")
    turns = record["conversations"]
    if not isinstance(turns, list):
        raise InvalidRecord("'conversations' is not a list")
    messages: list[dict[str, Any]] = []
    if record.get("tools"):
        messages.append(message("system", json.dumps(record["tools"], ensure_ascii=False), loss=False))
    for position, turn in enumerate(turns):
        if not isinstance(turn, dict) or "role" not in turn:
            raise InvalidRecord(f"message {position}: missing key 'role'")
        role, loss = turn["role"], turn.get("loss")
        if loss is not None and not isinstance(loss, bool):
            raise InvalidRecord(f"message {position}: 'loss' must be true or false, got {loss!r}")
        if role == "tool":
            if not turn.get("name"):
                raise InvalidRecord(f"message {position}: tool message without a name")
            observation = turn.get("observation", "")
            if not isinstance(observation, str):
                observation = json.dumps(observation, ensure_ascii=False)
            parameters = json.dumps(turn.get("parameters", {}), ensure_ascii=False)
            messages.append(message("assistant", parameters, loss=True if loss is None else loss, metadata=turn["name"]))
            messages.append(message("observation", observation, loss=False))
            continue
        if "content" not in turn:
            raise InvalidRecord(f"message {position}: missing key 'content'")
        if role == "system" and messages and record.get("tools") and position == 0:
            # The demo puts tools first; a user system prompt comes right after it as part of the same turn.
            messages[0]["content"] = turn["content"] + "\n" + messages[0]["content"]
            continue
        messages.append({**message(role, turn["content"], loss), **({"metadata": turn["metadata"]} if turn.get("metadata") else {})})
    return messages
