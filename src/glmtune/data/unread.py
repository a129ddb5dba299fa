"""The keys of a raw record that its converter never read: a field the model will not see (an `id`, a message's
`reasoning_content`) is counted in the dataset's report and named in its log, not dropped without a word.

`tracked(record)` wraps every object of the record in a dict that notes each key the converter looks at (by
`record[key]`, `get`, `in`, or by iterating it); an object the converter hands on whole (a tool's parameters, which
ride on the system message) counts as read through and through (`mark_carried`). `unread(record)` then lists the
paths of the keys left: `id`, `messages[].reasoning_content`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class TrackedDict(dict):  # type: ignore[type-arg]
    """A record's object that remembers which of its keys were read."""

    def __init__(self, data: dict[Any, Any] | None = None, path: str = "") -> None:
        super().__init__(data or {})
        self.path = path
        self.read: set[Any] = set()

    def __getitem__(self, key: Any) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.read.add(key)
        return super().__contains__(key)

    def _all_read(self) -> None:
        self.read.update(super().keys())

    def __iter__(self) -> Iterator[Any]:
        self._all_read()
        return super().__iter__()

    def keys(self):  # type: ignore[no-untyped-def]
        self._all_read()
        return super().keys()

    def items(self):  # type: ignore[no-untyped-def]
        self._all_read()
        return super().items()

    def values(self):  # type: ignore[no-untyped-def]
        self._all_read()
        return super().values()


def tracked(value: Any, path: str = "") -> Any:
    """`value` with every object in it a TrackedDict (lists of objects too), keyed by its path."""
    if isinstance(value, dict):
        return TrackedDict({key: tracked(item, f"{path}.{key}" if path else str(key)) for key, item in dict.items(value)},
                           path)
    if isinstance(value, list):
        return [tracked(item, f"{path}[]") for item in value]
    return value


def mark_carried(value: Any) -> None:
    """Every object in `value` (a converter's output) read through: it is carried whole into the conversation."""
    if isinstance(value, TrackedDict):
        value._all_read()
        for item in dict.values(value):
            mark_carried(item)
    elif isinstance(value, dict):
        for item in value.values():
            mark_carried(item)
    elif isinstance(value, list):
        for item in value:
            mark_carried(item)


def unread(value: Any) -> set[str]:
    """The paths of the keys of a tracked record that were never read (an unread object's own keys are not listed:
    its path says it all)."""
    paths: set[str] = set()
    if isinstance(value, TrackedDict):
        for key, item in dict.items(value):
            if key in value.read:
                paths |= unread(item)
            else:
                paths.add(f"{value.path}.{key}" if value.path else str(key))
    elif isinstance(value, list):
        for item in value:
            paths |= unread(item)
    return paths
