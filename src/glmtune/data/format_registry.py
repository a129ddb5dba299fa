"""The converter registry (a dataset's `format:` picks one; glmtune.data.formats holds them all) and what
converters share: a record's keys read with their kinds named, `columns:`/`tags:` options over their defaults, tools
from a list or a JSON string, the system message of a text and tools."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from glmtune.data.conversation import KINDS, InvalidRecord, kind_of, message, normalize_tools

Converter = Callable[[Any, dict[str, Any]], list[dict[str, Any]]]
CONVERTERS: dict[str, Converter] = {}
CONVERTER_OPTIONS: dict[str, tuple[str, ...]] = {}  # the dataset keys a converter reads (`columns`, `tags`)


def option_keys() -> tuple[str, ...]:
    """Every converter's option keys, once each, sorted: what the convert stage hands on of a dataset."""
    return tuple(sorted({key for options in CONVERTER_OPTIONS.values() for key in options}))


def register(name: str, options: tuple[str, ...] = ()) -> Callable[[Converter], Converter]:
    """A converter for `format: name`; `options`: the dataset keys it reads beyond its records (each needs its place in
    the schema's dataset properties and a field of ConvertSettings and DatasetSettings: tests/data/test_formats.py
    checks the three agree). They reach it as its `options` mapping, where the config gives them."""
    def add(func: Converter) -> Converter:
        CONVERTERS[name], CONVERTER_OPTIONS[name] = func, options
        return func

    return add


def record_object(value: Any, where: str = "record") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRecord(f"{where} is {kind_of(value)}, not an object")
    return value


def get_value(obj: dict[str, Any], key: str, kind: type = str, where: str = "", required: bool = True) -> Any:
    """obj[key], checked to be of `kind`; an optional key that is missing or null gives None."""
    if key not in obj or (obj[key] is None and not required):
        if required:
            raise InvalidRecord(f"{where}missing key '{key}'")
        return None
    value = obj[key]
    if not isinstance(value, kind):
        raise InvalidRecord(f"{where}'{key}' is {kind_of(value)}, not {KINDS[kind]}")
    return value


def option_mapping(options: dict[str, Any], key: str, defaults: dict[str, Any], required: tuple[str, ...]) -> dict[str, Any]:
    """An option like `columns:`/`tags:` merged over its defaults; a None value means "not read"."""
    given = options.get(key) or {}
    if not isinstance(given, dict):
        raise ValueError(f"option '{key}' must be a mapping, got {type(given).__name__}")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"option '{key}': unknown key(s) {', '.join(unknown)}; known: {', '.join(defaults)}")
    merged = {**defaults, **given}
    if missing := [name for name in required if not merged[name]]:
        raise ValueError(f"option '{key}': {', '.join(missing)} must name a key")
    return merged


def tools_of(value: Any, key: str = "tools") -> list[dict[str, Any]]:
    """Tool definitions from a list or a JSON-encoded list, normalised; none ([] / "" / "[]" / null) gives []."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except json.JSONDecodeError as err:
            raise InvalidRecord(f"'{key}' is a string but not valid JSON ({err.msg})") from None
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRecord(f"'{key}' is {kind_of(value)}, not a list")
    return normalize_tools(value)


def system_messages(text: str | None, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The system message for a system text and/or tools; none when both are empty."""
    return [message("system", text or "", tools=tools)] if text or tools else []
