"""LLaMA-Factory's source formats, alpaca and sharegpt (with their `columns:` and `tags:` renames), and its
dataset_info.json entries read as LLaMA-Factory reads them. Registered in glmtune.data.format_registry; import
glmtune.data.formats, which holds every format, to use them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glmtune.data.conversation import InvalidRecord, message
from glmtune.data.format_registry import get_value, option_mapping, record_object, register, system_messages, tools_of
from glmtune.repeated_keys import loads as json_loads, repeated_paths


ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
                  "history": "history", "tools": "tools"}


@register("alpaca", options=("columns",))
def alpaca(record: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Alpaca `{"instruction", "input", "output", "system"?, "history"?: [[q, a], ...], "tools"?}`.

    The human turn is instruction + "\\n" + input (the non-empty ones); history pairs come first and
    their answers are trained too. options["columns"] renames keys as LLaMA-Factory's `columns`
    (prompt, query, response, system, history, tools; a null column is not read).
    """
    columns = option_mapping(options, "columns", ALPACA_COLUMNS, required=("response",))
    record = record_object(record)
    response = get_value(record, columns["response"])
    names = [columns[key] for key in ("prompt", "query") if columns[key]]
    query = "\n".join(part for part in (get_value(record, name, required=False) for name in names) if part)
    if not query:
        raise InvalidRecord(f"{' and '.join(repr(name) for name in names) or 'prompt'} empty or missing")
    system = get_value(record, columns["system"], required=False) if columns["system"] else None
    tools = tools_of(record.get(columns["tools"]), columns["tools"]) if columns["tools"] else []
    messages = system_messages(system, tools)
    history = get_value(record, columns["history"], list, required=False) if columns["history"] else None
    for index, pair in enumerate(history or []):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(text, str) for text in pair)):
            raise InvalidRecord(f"'{columns['history']}' item {index} is not a [question, answer] pair of strings")
        messages += [message("user", pair[0]), message("assistant", pair[1])]
    return messages + [message("user", query), message("assistant", response)]


SHAREGPT_COLUMNS = {"messages": "conversations", "system": "system", "tools": "tools"}
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}


def _function_call(content: str, where: str) -> dict[str, Any]:
    """A `{"name", "arguments"}` JSON call -> assistant message (metadata = name, content = arguments JSON)."""
    try:
        call = json.loads(content)
    except json.JSONDecodeError as err:
        raise InvalidRecord(f"{where}function call is not valid JSON ({err.msg})") from None
    if isinstance(call, list) and len(call) == 1:
        call = call[0]
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
        raise InvalidRecord(f"{where}function call is not one {{\"name\", \"arguments\"}} object with a string 'name'")
    arguments = call.get("arguments", {})
    return message("assistant", arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False),
                   metadata=call["name"])


@register("sharegpt", options=("columns", "tags"))
def sharegpt(record: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """LLaMA-Factory's sharegpt: `{"conversations": [{"from", "value"}], "system"?, "tools"?}`.

    As LLaMA-Factory reads it: a leading system-tagged message is the system prompt, then turns
    alternate human|observation with gpt|function_call and end on the latter. A function_call is
    parsed into a tool call; an observation must directly follow one. options: `columns` (messages,
    system, tools) and `tags` (role_tag, content_tag, user_tag, assistant_tag, observation_tag,
    function_tag, system_tag) as in dataset_info.json.
    """
    columns = option_mapping(options, "columns", SHAREGPT_COLUMNS, required=("messages",))
    tags = option_mapping(options, "tags", SHAREGPT_TAGS, required=("role_tag", "content_tag", "user_tag", "assistant_tag"))
    record = record_object(record)
    turns = get_value(record, columns["messages"], list)
    kinds = {tags[f"{kind}_tag"]: kind for kind in ("system", "observation", "function", "assistant", "user") if tags[f"{kind}_tag"]}
    system = get_value(record, columns["system"], required=False) if columns["system"] else None
    tools = tools_of(record.get(columns["tools"]), columns["tools"]) if columns["tools"] else []
    body: list[dict[str, Any]] = []
    previous = None
    for position, turn in enumerate(turns):
        where = f"message {position}: "
        turn = record_object(turn, f"message {position}")
        tag, content = get_value(turn, tags["role_tag"], str, where), get_value(turn, tags["content_tag"], str, where)
        kind = kinds.get(tag)
        if kind is None:
            raise InvalidRecord(f"{where}unknown {tags['role_tag']} {tag!r} (expected one of {', '.join(map(repr, kinds))})")
        if kind == "system" and position == 0:
            if system and system != content:  # LLaMA-Factory keeps the turn and drops the column's text unsaid
                raise InvalidRecord(f"{where}a system turn and a {columns['system']!r} column with other text: which "
                                    "is the system prompt cannot be told (LLaMA-Factory keeps the turn): give one")
            system = content
            continue
        expected = ("user", "observation") if len(body) % 2 == 0 else ("assistant", "function")
        if kind not in expected:
            names = " or ".join(repr(tags[f"{name}_tag"]) for name in expected if tags[f"{name}_tag"])
            raise InvalidRecord(f"{where}{tag!r} out of turn (expected {names}: turns must alternate)")
        if kind == "observation" and previous != "function":
            raise InvalidRecord(f"{where}observation without a preceding function_call")
        body.append(_function_call(content, where) if kind == "function" else
                    message(kind, content))
        previous = kind
    if len(body) % 2:
        raise InvalidRecord(f"the last message is {turns[-1][tags['role_tag']]!r}; a conversation ends with an assistant turn")
    return system_messages(system, tools) + body


_UNSUPPORTED_COLUMNS = {"chosen": "preference data", "rejected": "preference data", "kto_tag": "KTO data",
                        "images": "images", "videos": "videos", "audios": "audio"}


def _read_info(path: Path) -> Any:
    """dataset_info.json parsed; a UTF-8 BOM (older Windows Notepad's) is accepted, as in data files."""
    raw = path.read_bytes()
    try:
        return json_loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line}: cannot decode as UTF-8 ({err.reason}); "
                         "LLaMA-Factory reads dataset_info.json as UTF-8: save it as UTF-8") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {err.lineno} column {err.colno}: invalid JSON ({err.msg}); fix it there "
                         "(LLaMA-Factory would not load it either)") from None


def _info_entry(info_path: str | Path, name: str) -> tuple[Path, dict[str, Any]]:
    path = Path(info_path)
    info = _read_info(path)
    if not isinstance(info, dict) or not isinstance(info.get(name), dict):
        raise ValueError(f"{path}: no dataset entry {name!r}")
    entry = info[name]
    if repeated := [key for key in repeated_paths(info) if key == name or key.startswith(f"{name}.")]:
        raise ValueError(f"{path}: {', '.join(repeated)} written twice: JSON (and LLaMA-Factory) keeps only the last, "
                         "which may not be the one meant: write it once")
    if not isinstance(entry.get("file_name"), str):
        source = next((f"{key} {entry[key]!r}" for key in ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url") if key in entry), "")
        raise ValueError(f"{path}: dataset {name!r} has no local file_name" + (f" (it loads from {source}; fetch it and add a file_name)" if source else ""))
    return path, entry


def dataset_info_file(info_path: str | Path, name: str) -> Path:
    """The data file of a dataset_info.json entry: its file_name, relative to the json's folder."""
    path, entry = _info_entry(info_path, name)
    return path.parent / entry["file_name"]


def from_dataset_info(info_path: str | Path, name: str) -> tuple[str, dict[str, Any]]:
    """(format, options) for an entry of LLaMA-Factory's dataset_info.json, read as LLaMA-Factory does.

    `formatting` alpaca (default) or sharegpt; with `columns` given, the columns it leaves out are not
    read (so system/history/tools are read only when named); the same for `tags`. Preference
    (ranking, chosen/rejected), KTO and multimodal entries raise ValueError naming file and entry.
    """
    path, entry = _info_entry(info_path, name)
    where = f"{path}: dataset {name!r}"
    fmt = entry.get("formatting", "alpaca")
    if fmt not in ("alpaca", "sharegpt"):
        raise ValueError(f"{where}: formatting {fmt!r} is not supported (alpaca or sharegpt)")
    if entry.get("ranking"):
        raise ValueError(f"{where}: preference data (ranking: true) is not supported")
    given = entry.get("columns", {})
    if not isinstance(given, dict):
        raise ValueError(f"{where}: 'columns' is not a mapping")
    for key, what in _UNSUPPORTED_COLUMNS.items():
        if given.get(key):
            raise ValueError(f"{where}: {what} (columns.{key}) is not supported")
    base = ({"prompt": "instruction", "query": "input", "response": "output", "system": None, "history": None, "tools": None}
            if fmt == "alpaca" else {"messages": "conversations", "system": None, "tools": None})
    columns = {key: given.get(key) for key in base} if "columns" in entry else base
    if fmt == "alpaca" and not (columns["response"] and (columns["prompt"] or columns["query"])):
        raise ValueError(f"{where}: needs prompt and response columns (a plain-text corpus is not supported)")
    if fmt == "sharegpt" and not columns["messages"]:
        raise ValueError(f"{where}: columns.messages is empty")
    options: dict[str, Any] = {"columns": columns}
    if entry.get("num_samples") is not None:  # not read here: the config's max_samples / sample_ratio say it (common.smk)
        options["num_samples"] = entry["num_samples"]
    if fmt == "sharegpt" and "tags" in entry:
        tags = entry["tags"]
        if not isinstance(tags, dict):
            raise ValueError(f"{where}: 'tags' is not a mapping")
        options["tags"] = {tag: tags.get(tag) for tag in SHAREGPT_TAGS}
        if not all(options["tags"][tag] for tag in ("role_tag", "content_tag", "user_tag", "assistant_tag")):
            raise ValueError(f"{where}: tags must name role_tag, content_tag, user_tag and assistant_tag")
    return fmt, options
