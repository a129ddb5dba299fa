"""The one conversation record every source format is converted into, and its rules.

A canonical record is the ChatGLM3 `conversations` schema, normalised:
`{"conversations": [{"role", "content", "loss", "metadata"?}, ...]}` where role is one of
system / user / assistant / observation and `loss` is always an explicit boolean.
(A ChatGLM3 `tool` message is expanded by its converter into an assistant tool call plus an observation.)
"""

from __future__ import annotations

from typing import Any

ROLES = ("system", "user", "assistant", "observation")
# Roles the model is trained on when a message carries no `loss` flag (the demos' rule).
TRAINED_BY_DEFAULT = {"assistant"}


class InvalidRecord(ValueError):
    """A record breaks the schema; the message says why (the caller adds file and record)."""


def message(role: str, content: str, loss: bool | None = None, metadata: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": role, "content": content}
    msg["loss"] = role in TRAINED_BY_DEFAULT if loss is None else loss
    if metadata:
        msg["metadata"] = metadata
    return msg


def validate_conversation(conversation: Any) -> None:
    """Raise InvalidRecord unless `conversation` is a well-formed canonical message list."""
    if not isinstance(conversation, list) or not conversation:
        raise InvalidRecord("conversation is empty or not a list of messages")
    seen_user = seen_system = False
    for position, msg in enumerate(conversation):
        where = f"message {position}"
        if not isinstance(msg, dict):
            raise InvalidRecord(f"{where}: not an object")
        for key in ("role", "content"):
            if key not in msg:
                raise InvalidRecord(f"{where}: missing key '{key}'")
        role, content = msg["role"], msg["content"]
        if role not in ROLES:
            raise InvalidRecord(f"{where}: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(content, str):
            raise InvalidRecord(f"{where}: content is {type(content).__name__}, not a string")
        if "loss" in msg and not isinstance(msg["loss"], bool):
            raise InvalidRecord(f"{where}: 'loss' must be true or false, got {msg['loss']!r}")
        if role == "system":
            if seen_system:
                raise InvalidRecord(f"{where}: a second system message")
            if seen_user:
                raise InvalidRecord(f"{where}: system message after a user message")
            seen_system = True
        elif role == "user":
            seen_user = True
        elif role == "assistant" and not content.strip() and not msg.get("metadata"):
            raise InvalidRecord(f"{where}: empty assistant message")
    if not any(m["role"] == "user" for m in conversation):
        raise InvalidRecord("no user message")
    if not any(m["role"] == "assistant" and m.get("loss", True) for m in conversation):
        raise InvalidRecord("no trained assistant message")
