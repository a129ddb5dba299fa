"""Source formats: each converter maps one raw record to a canonical message list.

Converters are registered by name; a dataset's `format:` in the config picks one. They raise
InvalidRecord with the reason (naming the key); the caller decides whether that stops the job or
becomes a reject. Option errors (a bad `columns:`/`tags:` mapping) raise a plain ValueError.

| format            | record                                                                  | options          |
|-------------------|-------------------------------------------------------------------------|------------------|
| advertisegen      | `{"content", "summary"}`                                                | -                |
| chatglm3          | `{"conversations": [{"role", "content", "loss"?}], "tools"?}`           | -                |
| glm4              | `{"messages": [{"role", "content", "tools"?, "metadata"?, "loss"?}]}`   | -                |
| alpaca            | `{"instruction", "input"?, "output", "system"?, "history"?, "tools"?}`  | columns          |
| prompt_completion | `{"prompt", "completion"}`                                              | -                |
| emollm            | `{"conversation": [{"system"? (first turn only), "input", "output"}]}`  | -                |
| sharegpt          | `{"conversations": [{"from", "value"}], "system"?, "tools"?}`           | columns, tags    |

Tools (a list, or for sharegpt/alpaca also a JSON-encoded string) stay structured: they ride on the
system message as `tools` (plain function objects, see schema.normalize_tools), whose content is the
system text or "". A tool call is an assistant message whose metadata is the function name and whose
content is the arguments as JSON. The chat template renders both in its family's layout (glm4: the
arguments as they are; chatglm3: its own `tool_call(...)` form; see glmtune.chat_template).
Default loss (a message without `loss`) follows each format's own demo: chatglm3 trains every role but
system and user; the others train only assistant messages (GLM-4's demo: system/user/observation untrained).
`from_dataset_info` reads an entry of LLaMA-Factory's dataset_info.json into (format, options).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glmtune.chat_template import CHATGLM3_TOOLS_INTRO
from glmtune.data.conversation import KINDS, InvalidRecord, kind_of, message, normalize_tools
from glmtune.repeated_keys import loads as json_loads, repeated_paths

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


def _object(value: Any, where: str = "record") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRecord(f"{where} is {kind_of(value)}, not an object")
    return value


def _get(obj: dict[str, Any], key: str, kind: type = str, where: str = "", required: bool = True) -> Any:
    """obj[key], checked to be of `kind`; an optional key that is missing or null gives None."""
    if key not in obj or (obj[key] is None and not required):
        if required:
            raise InvalidRecord(f"{where}missing key '{key}'")
        return None
    value = obj[key]
    if not isinstance(value, kind):
        raise InvalidRecord(f"{where}'{key}' is {kind_of(value)}, not {KINDS[kind]}")
    return value


def _mapping(options: dict[str, Any], key: str, defaults: dict[str, Any], required: tuple[str, ...]) -> dict[str, Any]:
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


def _tools(value: Any, key: str = "tools") -> list[dict[str, Any]]:
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


def _system(text: str | None, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The system message for a system text and/or tools; none when both are empty."""
    return [message("system", text or "", tools=tools)] if text or tools else []


@register("advertisegen")
def advertisegen(record: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """AdvertiseGen `{"content": attributes, "summary": ad text}` -> user / assistant."""
    record = _object(record)
    return [message("user", _get(record, "content")), message("assistant", _get(record, "summary"))]


@register("prompt_completion")
def prompt_completion(record: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """`{"prompt", "completion"}` -> user / assistant (a fixed system prompt comes from options["system"])."""
    record = _object(record)
    return [message("user", _get(record, "prompt")), message("assistant", _get(record, "completion"))]


CHATGLM3_UNTRAINED = ("system", "user")  # the ChatGLM3 finetune README: without `loss`, every other role is trained


def _chatglm3_parameters(turn: dict[str, Any], where: str) -> dict[str, Any]:
    """A tool message's `parameters`: an object, or a string holding a JSON object (parsed, not encoded again). One
    left out is refused, as the demo's `conv["parameters"]` fails on it: read as no arguments, a call to a tool that
    takes some would be trained without them."""
    if "parameters" not in turn:
        raise InvalidRecord(f"{where}tool message without 'parameters': give the call's arguments as an object "
                            "(an empty one, {}, for a tool that takes none)")
    parameters = turn["parameters"]
    if isinstance(parameters, str):
        try:
            parameters = json.loads(parameters)
        except json.JSONDecodeError as err:
            raise InvalidRecord(f"{where}'parameters' is a string but not JSON ({err.msg}); give an object of "
                                "argument names and values, or a string holding one") from None
    if not isinstance(parameters, dict):
        raise InvalidRecord(f"{where}'parameters' is {kind_of(parameters)}, not an object; give an object of "
                            "argument names and values (as tool_call(name=value, ...) takes them)")
    return parameters


def _chatglm3_history_tools(system: dict[str, Any], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tools on the first system message, as ChatGLM3's own chat history holds them: chat() renders the message's
    text, a newline and the tools as JSON, which with the demo's sentence as the text is the finetune demo's tools
    message. Another text would render otherwise than the chatglm3 layout writes it, so it is refused."""
    if tools:
        raise InvalidRecord("message 0: tools given twice, on the record and on its system message: give them once")
    text = _get(system, "content", str, "message 0: ", required=False) or ""
    if text.strip() and text.strip() != CHATGLM3_TOOLS_INTRO.strip():
        raise InvalidRecord(f"message 0: a system message with tools and its own text ({text[:40]!r}): ChatGLM3's "
                            "chat() writes that text before the tools, where the finetune demo writes its own sentence; "
                            "put the tools on the record (\"tools\") and the text in a system message of its own")
    return normalize_tools(system["tools"], "message 0: ")


def _chatglm3_tool(turn: dict[str, Any], loss: bool | None, where: str) -> list[dict[str, Any]]:
    """A `tool` message -> an assistant call (trained unless `loss` says no) and its observation (never trained)."""
    if not turn.get("name"):
        raise InvalidRecord(f"{where}tool message without a name")
    name = _get(turn, "name", str, where)
    parameters = json.dumps(_chatglm3_parameters(turn, where), ensure_ascii=False)
    observation = turn.get("observation")  # the demo dumps any non-string (a missing one as null)
    if not isinstance(observation, str):
        observation = json.dumps(observation, ensure_ascii=False)
    return [message("assistant", parameters, loss=True if loss is None else loss, metadata=name),
            message("observation", observation, loss=False)]


@register("chatglm3")
def chatglm3(record: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """ChatGLM3 finetune demo `{"conversations": [...], "tools"?: [...]}`.

    As in the demo (finetune_demo/README.md, preprocess_utils.py): tools ride on the first system message,
    whose text (if the record has one) the chatglm3 template renders as a second system message after the
    tools prompt; a `tool` message becomes an assistant tool call (name as metadata, parameters as JSON
    content: an object, or a string holding a JSON object, which is parsed) followed by an untrained
    observation (a non-string one dumped as JSON); without `loss`, system and user are untrained and every
    other role (assistant, observation) is trained. A given `loss` is honoured on any role.
    """
    record = _object(record)
    turns = _get(record, "conversations", object)
    if not isinstance(turns, list):
        raise InvalidRecord("'conversations' is not a list")
    tools = normalize_tools(_get(record, "tools", list, required=False) or [])
    first = 0  # the turn after a system message holding the tools, which are read here
    if turns and isinstance(turns[0], dict) and turns[0].get("role") == "system" and "tools" in turns[0]:
        tools, first = _chatglm3_history_tools(turns[0], tools), 1
    messages: list[dict[str, Any]] = _system(None, tools)
    for position, turn in enumerate(turns[first:], start=first):
        where = f"message {position}: "
        if not isinstance(turn, dict) or "role" not in turn:
            raise InvalidRecord(f"{where}missing key 'role'")
        role, loss = turn["role"], turn.get("loss")
        if loss is not None and not isinstance(loss, bool):
            raise InvalidRecord(f"{where}'loss' must be true or false, got {loss!r}")
        metadata = _get(turn, "metadata", str, where, required=False)
        if role == "tool":
            messages += _chatglm3_tool(turn, loss, where)
            continue
        if "content" not in turn:
            raise InvalidRecord(f"{where}missing key 'content'")
        if loss is None:
            loss = role not in CHATGLM3_UNTRAINED
        if role == "system" and tools and position == 0:
            # One canonical system message carries the tools and the record's own system text.
            messages[0]["content"] = _get(turn, "content", str, where)
            messages[0]["loss"] = loss
            continue
        messages.append(message(role, turn["content"], loss, metadata))
    return messages


GLM4_ROLES = ("system", "user", "assistant", "observation", "tool")


@register("glm4")
def glm4(record: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """GLM-4 finetune demo `{"messages": [{"role", "content", "tools"?, "metadata"?, "loss"?}]}`.

    Tools ride on the system message (kept structured); `tool` is read as `observation`;
    metadata (a tool call's function name) is kept; without `loss`, only assistant is trained.
    """
    messages = []
    for position, turn in enumerate(_get(_object(record), "messages", list)):
        where = f"message {position}: "
        turn = _object(turn, f"message {position}")
        role = _get(turn, "role", str, where)
        if role not in GLM4_ROLES:
            raise InvalidRecord(f"{where}unknown role {role!r} (expected one of {', '.join(GLM4_ROLES)})")
        content = _get(turn, "content", str, where)
        tools = _get(turn, "tools", list, where, required=False)
        if tools and role != "system":
            raise InvalidRecord(f"{where}'tools' on a {role} message (GLM-4 reads tools only from the system message)")
        tools = normalize_tools(tools, where) if tools else None
        loss = _get(turn, "loss", bool, where, required=False)
        metadata = _get(turn, "metadata", str, where, required=False)
        messages.append(message("observation" if role == "tool" else role, content, loss, metadata, tools))
    return messages


ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
                  "history": "history", "tools": "tools"}


@register("alpaca", options=("columns",))
def alpaca(record: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Alpaca `{"instruction", "input", "output", "system"?, "history"?: [[q, a], ...], "tools"?}`.

    The human turn is instruction + "\\n" + input (the non-empty ones); history pairs come first and
    their answers are trained too. options["columns"] renames keys as LLaMA-Factory's `columns`
    (prompt, query, response, system, history, tools; a null column is not read).
    """
    columns = _mapping(options, "columns", ALPACA_COLUMNS, required=("response",))
    record = _object(record)
    response = _get(record, columns["response"])
    names = [columns[key] for key in ("prompt", "query") if columns[key]]
    query = "\n".join(part for part in (_get(record, name, required=False) for name in names) if part)
    if not query:
        raise InvalidRecord(f"{' and '.join(repr(name) for name in names) or 'prompt'} empty or missing")
    system = _get(record, columns["system"], required=False) if columns["system"] else None
    tools = _tools(record.get(columns["tools"]), columns["tools"]) if columns["tools"] else []
    messages = _system(system, tools)
    history = _get(record, columns["history"], list, required=False) if columns["history"] else None
    for index, pair in enumerate(history or []):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(text, str) for text in pair)):
            raise InvalidRecord(f"'{columns['history']}' item {index} is not a [question, answer] pair of strings")
        messages += [message("user", pair[0]), message("assistant", pair[1])]
    return messages + [message("user", query), message("assistant", response)]


@register("emollm")
def emollm(record: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """EmoLLM / XTuner `{"conversation": [{"system"?, "input", "output"}, ...]}`; system only on the first turn."""
    messages: list[dict[str, Any]] = []
    for position, turn in enumerate(_get(_object(record), "conversation", list)):
        where = f"turn {position}: "
        turn = _object(turn, f"turn {position}")
        if position and "system" in turn:
            raise InvalidRecord(f"{where}'system' after the first turn")
        if system := _get(turn, "system", str, where, required=False):
            messages.append(message("system", system))
        messages += [message("user", _get(turn, "input", str, where)), message("assistant", _get(turn, "output", str, where))]
    return messages


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
    columns = _mapping(options, "columns", SHAREGPT_COLUMNS, required=("messages",))
    tags = _mapping(options, "tags", SHAREGPT_TAGS, required=("role_tag", "content_tag", "user_tag", "assistant_tag"))
    record = _object(record)
    turns = _get(record, columns["messages"], list)
    kinds = {tags[f"{kind}_tag"]: kind for kind in ("system", "observation", "function", "assistant", "user") if tags[f"{kind}_tag"]}
    system = _get(record, columns["system"], required=False) if columns["system"] else None
    tools = _tools(record.get(columns["tools"]), columns["tools"]) if columns["tools"] else []
    body: list[dict[str, Any]] = []
    previous = None
    for position, turn in enumerate(turns):
        where = f"message {position}: "
        turn = _object(turn, f"message {position}")
        tag, content = _get(turn, tags["role_tag"], str, where), _get(turn, tags["content_tag"], str, where)
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
    return _system(system, tools) + body


_UNSUPPORTED_COLUMNS = {"chosen": "preference data", "rejected": "preference data", "kto_tag": "KTO data",
                        "images": "images", "videos": "videos", "audios": "audio"}


def _info_entry(info_path: str | Path, name: str) -> tuple[Path, dict[str, Any]]:
    path = Path(info_path)
    info = json_loads(path.read_text(encoding="utf-8"))
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
