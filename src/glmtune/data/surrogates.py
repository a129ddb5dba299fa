"""Lone UTF-16 surrogates in a record's text. JSON can write one as an escape (`"\\ud83d"`: half of an emoji whose
other half a cut removed, as JavaScript string slicing leaves them), Python reads it into a str, and no UTF-8 file or
tokenizer can hold it: writing the conversation out failed with a UnicodeEncodeError naming no record, and a tokenizer with a TypeError."""

from __future__ import annotations

import re
from typing import Any

LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def surrogate_paths(value: Any, at: str = "") -> list[str]:
    """`conversations[1].value` style paths of the keys and strings that hold a lone surrogate, with the first one."""
    found: list[str] = []
    if isinstance(value, str):
        if match := LONE_SURROGATE.search(value):
            found.append(f"{at or 'the record'} (\\u{ord(match.group()):04x} at character {match.start()})")
    elif isinstance(value, dict):
        for key, item in value.items():
            here = f"{at}.{key}" if at else str(key)
            found += surrogate_paths(key, f"{here} (its key)") if isinstance(key, str) and LONE_SURROGATE.search(key) else []
            found += surrogate_paths(item, here)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += surrogate_paths(item, f"{at}[{index}]")
    return found


def surrogate_problem(record: Any) -> str | None:
    """What to say of a record (or request) holding a lone surrogate; None where it holds none."""
    if halves := surrogate_paths(record):
        return (f"{', '.join(halves)}: a lone UTF-16 surrogate, half of a character such as an emoji whose other half "
                "was cut off; no UTF-8 text can hold it: fix or remove it")
    return None
