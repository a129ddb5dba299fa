"""Where a value sits in parsed JSON (or YAML), named as the messages name it: `conversations[1].role`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def child(at: str, key: object) -> str:
    """The path of the value under `key` of the mapping at `at`."""
    return f"{at}.{key}" if at else str(key)


def item(at: str, index: int) -> str:
    """The path of item `index` of the list at `at`."""
    return f"{at}[{index}]"


def nodes(value: Any, at: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of `value` and of everything inside it, each mapping or list before what it holds."""
    yield at, value
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from nodes(inner, child(at, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from nodes(inner, item(at, index))
