"""Hand-written canonical messages and the converter as convert_file calls it, for the format tests."""

from __future__ import annotations

import json
from typing import Any

from glmtune.data.conversation import validate_conversation
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


def turn(tag: str, value: Any) -> dict[str, Any]:
    return {"from": tag, "value": value}
