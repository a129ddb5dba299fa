"""Lone UTF-16 surrogates in a record's text. JSON can write one as an escape (`"\\ud83d"`: half of an emoji whose
other half a cut removed, as JavaScript string slicing leaves them), Python reads it into a str, and no UTF-8 file or
tokenizer can hold it: writing the conversation out failed with a UnicodeEncodeError naming no record, and a tokenizer with a TypeError."""

from __future__ import annotations

import re
from typing import Any

from glmtune.json_paths import child, nodes

LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def surrogate_paths(value: Any) -> list[str]:
    """`conversations[1].value` style paths of the keys and strings that hold a lone surrogate, with the first one."""
    def where(path: str, text: str) -> str | None:
        match = LONE_SURROGATE.search(text)
        return f"{path} (\\u{ord(match.group()):04x} at character {match.start()})" if match else None

    found = []
    for path, node in nodes(value):
        if isinstance(node, str):
            found.append(where(path or "the record", node))
        elif isinstance(node, dict):
            found += [where(f"{child(path, key)} (its key)", key) for key in node if isinstance(key, str)]
    return [place for place in found if place]


def surrogate_problem(record: Any) -> str | None:
    """What to say of a record (or request) holding a lone surrogate; None where it holds none."""
    if halves := surrogate_paths(record):
        return (f"{', '.join(halves)}: a lone UTF-16 surrogate, half of a character such as an emoji whose other half "
                "was cut off; no UTF-8 text can hold it: fix or remove it")
    return None
