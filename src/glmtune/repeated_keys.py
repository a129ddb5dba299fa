"""Keys written twice in one JSON object or YAML mapping: both parsers keep the last value and drop the other without
a word. In a config file that loses a whole section (a second `train:` pasted below the first); in a record, one of
two answers. Which one was meant cannot be known, so these are refused, naming where, rather than guessed.

`json_object` is an object_pairs_hook that marks such objects (a RepeatedKeys dict); `repeated_paths` finds them in a
parsed value; `yaml_repeated` finds them in a YAML (or JSON) text with their lines; `config_file_problems` says it
for a config file.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from glmtune.json_paths import child, item, nodes


class RepeatedKeys(dict):  # type: ignore[type-arg]
    """A JSON object that named some keys more than once (`repeated`); it holds the last value of each, as json does."""

    repeated: tuple[str, ...] = ()


def json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook: a plain dict, or a RepeatedKeys naming the keys written twice."""
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    marked = RepeatedKeys(value)
    marked.repeated = tuple(sorted(key for key, count in Counter(key for key, _ in pairs).items() if count > 1))
    return marked


def loads(text: str) -> Any:
    """json.loads that marks objects with keys written twice (see json_object)."""
    return json.loads(text, object_pairs_hook=json_object)


def repeated_paths(value: Any, at: str = "") -> list[str]:
    """Where keys are written twice in a parsed JSON value: `conversations[1].role` style paths of each such key."""
    return [child(path, key) for path, node in nodes(value, at) if isinstance(node, dict)
            for key in getattr(node, "repeated", ())]


def yaml_repeated(text: str) -> list[tuple[str, list[int], bool]]:
    """(dotted key, its lines from 1, whether it holds a section) for every key written twice in one mapping of a
    YAML (or JSON) text; a text that does not parse gives none (the loader that reads it says why)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    found: list[tuple[str, list[int], bool]] = []

    def walk(node: yaml.Node, at: str) -> None:
        if isinstance(node, yaml.MappingNode):
            lines: dict[str, list[int]] = {}
            sections: set[str] = set()
            for key, inner in node.value:
                name = str(key.value)
                lines.setdefault(name, []).append(key.start_mark.line + 1)
                if isinstance(inner, yaml.MappingNode):
                    sections.add(name)
                walk(inner, child(at, name))
            found.extend((child(at, name), where, name in sections) for name, where in lines.items() if len(where) > 1)
        elif isinstance(node, yaml.SequenceNode):
            for index, inner in enumerate(node.value):
                walk(inner, item(at, index))

    if root is not None:
        walk(root, "")
    return found


def config_file_problems(path: str | Path) -> list[str]:
    """One line per key a config file writes twice in one mapping: YAML would keep the last and drop the rest."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return []  # the loader that reads the file names the problem
    return [f"{path}: {key} is written {'twice' if len(lines) == 2 else f'{len(lines)} times'} (lines {', '.join(map(str, lines))}): YAML keeps only the "
            "last and drops the others' settings; write it once" + (", with all its keys" if section else "")
            for key, lines, section in yaml_repeated(text)]
