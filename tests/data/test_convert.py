"""convert_file, the source-format converters and the canonical schema rules, on small files in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from glmtune.data.convert import ConversionError, convert_file
from glmtune.data.formats import CONVERTERS
from glmtune.data.records import DataFileError
from glmtune.io import read_jsonl
from helpers.settings import convert_settings


def user(content: Any, **extra: Any) -> dict[str, Any]:
    return {"role": "user", "content": content, **extra}


def assistant(content: Any, **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content, **extra}


def system(content: Any, **extra: Any) -> dict[str, Any]:
    return {"role": "system", "content": content, **extra}


def conv(*turns: Any) -> dict[str, Any]:
    return {"conversations": list(turns)}


TOOLS = [{"name": "get_weather", "description": "查询天气", "parameters": {"type": "object"}}]


# (format, bad record, reason substring)
MALFORMED = [
    pytest.param("chatglm3", conv({"role": "user"}, assistant("a")), "message 0: missing key 'content'", id="missing-content"),
    pytest.param("chatglm3", conv({"content": "hi"}, assistant("a")), "message 0: missing key 'role'", id="missing-role"),
    pytest.param("chatglm3", conv("hi", assistant("a")), "message 0: missing key 'role'", id="message-not-object"),
    pytest.param("chatglm3", conv({"role": "bot", "content": "x"}, user("q"), assistant("a")), "unknown role 'bot'", id="unknown-role"),
    pytest.param("chatglm3", conv(user("q"), system("s"), assistant("a")), "message 1: system message after a user message", id="system-after-user"),
    pytest.param("chatglm3", conv(system("s1"), system("s2"), user("q"), assistant("a")), "message 1: a second system message", id="second-system"),
    pytest.param("chatglm3", conv(user("q"), assistant("  \n")), "message 1: empty assistant message", id="empty-assistant"),
    pytest.param("chatglm3", conv(user("q"), {"role": "observation", "content": "o"}, assistant("a")),
                 "message 1: an observation after a user message; an observation is a tool's result", id="observation-after-user"),
    pytest.param("chatglm3", conv({"role": "observation", "content": "o"}, user("q"), assistant("a")),
                 "message 0: an observation as the first message", id="observation-first"),
    # GLM-4's template writes nothing for an empty message: the call would vanish, or run on into the answer
    pytest.param("chatglm3", conv(user("q"), assistant("", metadata="search"), {"role": "observation", "content": "o"},
                                  assistant("a")),
                 "message 1: a tool call to 'search' with empty arguments: a call's content is its arguments as JSON, {}",
                 id="tool-call-without-arguments"),
    pytest.param("chatglm3", conv(user("q"), assistant("\ufe0f\u200d ")), "message 1: empty assistant message",
                 id="invisible-assistant"),
    pytest.param("chatglm3", conv(user("q"), {"role": "tool", "name": "get_weather", "observation": "o"}, assistant("a")),
                 "message 1: tool message without 'parameters'", id="tool-without-parameters"),
    pytest.param("chatglm3", conv(user("q"), assistant("a", loss="yes")), "message 1: 'loss' must be true or false", id="loss-not-bool"),
    pytest.param("chatglm3", conv(user("q"), assistant("a", loss=1)), "'loss' must be true or false, got 1", id="loss-is-int"),
    pytest.param("chatglm3", conv(user("q"), {"role": "tool", "parameters": {}}, assistant("a")), "message 1: tool message without a name", id="tool-without-name"),
    pytest.param("chatglm3", {"conversations": [user("q"), assistant("a")], "tools": [*TOOLS, {**TOOLS[0], "description": "x"}]},
                 "tool 1: a second function named 'get_weather' (tool 0 has that name)", id="tool-name-twice"),
    pytest.param("chatglm3", {"conversations": "q"}, "'conversations' is not a list", id="conversations-not-list"),
    pytest.param("chatglm3", {"messages": [user("q"), assistant("a")]}, "missing key 'conversations'", id="missing-conversations"),
    pytest.param("chatglm3", conv(), "conversation is empty", id="empty-conversations"),
    pytest.param("chatglm3", 42, "record is a number, not an object", id="record-not-object"),
    pytest.param("chatglm3", conv(user(5), assistant("a")), "message 0: content is a number, not a string", id="content-not-string"),
    pytest.param("chatglm3", conv(system("s"), assistant("a")), "no user message", id="no-user"),
    pytest.param("chatglm3", conv(user("q")), "no trained assistant message", id="no-assistant"),
    pytest.param("chatglm3", conv(user("q"), assistant("a", loss=False)), "no trained assistant message", id="assistant-untrained"),
    pytest.param("advertisegen", {"content": "类型#裙"}, "missing key 'summary'", id="adgen-missing-summary"),
    pytest.param("advertisegen", {"summary": "好看"}, "missing key 'content'", id="adgen-missing-content"),
    pytest.param("advertisegen", {"content": "类型#裙", "summary": 3}, "'summary' is a number, not a string", id="adgen-summary-number"),
    pytest.param("advertisegen", {"content": None, "summary": "好看"}, "'content' is null, not a string", id="adgen-content-null"),
    pytest.param("advertisegen", {"content": "类型#裙", "summary": ""}, "empty assistant message", id="adgen-empty-summary"),
    pytest.param("advertisegen", "类型#裙", "record is a string, not an object", id="adgen-record-string"),
]

GOOD = {
    "chatglm3": [conv(user("你好"), assistant("你好！")), conv(system("s"), user("q2"), assistant("a2"))],
    "advertisegen": [{"content": "类型#裙*颜色#红色", "summary": "红色长裙"}, {"content": "类型#上衣", "summary": "白色T恤"}],
}


def run(tmp_path: Path, raw: Path, fmt: str, **options: Any) -> dict[str, Any]:
    return convert_file(raw, tmp_path / "out" / "conv.jsonl", tmp_path / "out" / "rejects.jsonl",
                        tmp_path / "out" / "report.json", fmt, "ds", convert_settings(**options))


def write_lines(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize(("fmt", "bad", "reason"), MALFORMED)
def test_invalid_jsonl_record_stops_with_file_line_and_reason(tmp_path: Path, fmt: str, bad: Any, reason: str) -> None:
    raw = write_lines(tmp_path / "raw.jsonl", [GOOD[fmt][0], bad, GOOD[fmt][1]])
    with pytest.raises(ConversionError) as info:
        run(tmp_path, raw, fmt, on_invalid="error")
    message = str(info.value)
    assert message.startswith(f"{raw}: line 2: ")
    assert reason in message
    assert "on_invalid" in message
    # nothing written: no partial output, rejects or report
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == [raw]


@pytest.mark.parametrize(("fmt", "bad", "reason"), MALFORMED)
def test_invalid_array_record_names_its_index(tmp_path: Path, fmt: str, bad: Any, reason: str) -> None:
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps([GOOD[fmt][0], GOOD[fmt][1], bad], ensure_ascii=False, indent=1), encoding="utf-8")
    with pytest.raises(ConversionError) as info:
        run(tmp_path, raw, fmt)  # on_invalid defaults to "error"
    assert str(info.value).startswith(f"{raw}: record 2: ")
    assert reason in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["chatglm3", "advertisegen"])
def test_skip_mode_accounts_for_every_record(tmp_path: Path, fmt: str) -> None:
    cases = [(bad, reason) for f, bad, reason in (p.values for p in MALFORMED) if f == fmt]
    records: list[Any] = []
    for index, (bad, _) in enumerate(cases):
        if index % 2 == 0:
            good = dict(GOOD[fmt][0])
            good["conversations" if fmt == "chatglm3" else "summary"] = (
                [user(f"q{index}"), assistant(f"a{index}")] if fmt == "chatglm3" else f"广告{index}")
            records.append(good)
        records.append(bad)
    raw = write_lines(tmp_path / "raw.jsonl", records)
    report = run(tmp_path, raw, fmt, on_invalid="skip", max_reject_ratio=1)  # a file of mostly bad records, on purpose
    out = list(read_jsonl(tmp_path / "out" / "conv.jsonl"))
    rejects = list(read_jsonl(tmp_path / "out" / "rejects.jsonl"))
    n_good = len(records) - len(cases)
    assert len(out) == n_good and len(rejects) == len(cases)
    assert len(out) + len(rejects) == len(records)
    assert report == {"dataset": "ds", "file": str(raw), "format": fmt, "records_in": len(records),
                      "records_out": n_good, "rejected": len(cases), "duplicates": 0,
                      "steps": {"invalid": len(cases)}, "keys_not_read": {}}
    assert json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8")) == report
    bad_lines = [f"line {number}" for number, record in enumerate(records, start=1) if any(record is b for b, _ in cases)]
    assert [r["where"] for r in rejects] == bad_lines
    for reject, (bad, reason) in zip(rejects, cases):
        assert reason in reject["reason"]
        assert reject["record"] == bad
    assert all(row["source"]["dataset"] == "ds" and row["source"]["index"].startswith("line ") for row in out)


def test_advertisegen_output(tmp_path: Path) -> None:
    raw = write_lines(tmp_path / "raw.jsonl", GOOD["advertisegen"])
    run(tmp_path, raw, "advertisegen")
    out = list(read_jsonl(tmp_path / "out" / "conv.jsonl"))
    assert out[0] == {
        "conversations": [
            {"role": "user", "content": "类型#裙*颜色#红色", "loss": False},
            {"role": "assistant", "content": "红色长裙", "loss": True},
        ],
        "source": {"dataset": "ds", "index": "line 1", "file": str(raw)},
    }
    assert list(read_jsonl(tmp_path / "out" / "rejects.jsonl")) == []


def test_fixed_system_prompt_is_inserted_once(tmp_path: Path) -> None:
    raw = write_lines(tmp_path / "raw.jsonl", GOOD["chatglm3"])
    run(tmp_path, raw, "chatglm3", system="你是助手")
    out = [row["conversations"] for row in read_jsonl(tmp_path / "out" / "conv.jsonl")]
    assert out[0][0] == {"role": "system", "content": "你是助手", "loss": False}
    assert out[0][1:] == [{"role": "user", "content": "你好", "loss": False}, {"role": "assistant", "content": "你好！", "loss": True}]
    assert out[1][0] == {"role": "system", "content": "s", "loss": False}  # the record's own system prompt is kept
    assert [m["role"] for m in out[1]] == ["system", "user", "assistant"]


def test_encoding_option_is_used(tmp_path: Path) -> None:
    raw = tmp_path / "raw.jsonl"
    raw.write_bytes((json.dumps(GOOD["advertisegen"][0], ensure_ascii=False) + "\n").encode("gbk"))
    report = run(tmp_path, raw, "advertisegen", encoding="gbk")
    assert report["records_out"] == 1
    assert next(read_jsonl(tmp_path / "out" / "conv.jsonl"))["conversations"][1]["content"] == "红色长裙"


def test_unknown_format(tmp_path: Path) -> None:
    raw = write_lines(tmp_path / "raw.jsonl", GOOD["advertisegen"])
    with pytest.raises(ConversionError, match="unknown format 'nosuchformat'"):
        run(tmp_path, raw, "nosuchformat")
    assert set(CONVERTERS) >= {"advertisegen", "chatglm3"}


# --- dedupe -------------------------------------------------------------------------------------

def test_exact_duplicates_are_rejected_and_counted(tmp_path: Path) -> None:
    a, b = GOOD["advertisegen"]
    raw = write_lines(tmp_path / "raw.jsonl", [a, b, a, {"content": a["content"], "summary": "不同"}, b])
    report = run(tmp_path, raw, "advertisegen")
    out = list(read_jsonl(tmp_path / "out" / "conv.jsonl"))
    rejects = list(read_jsonl(tmp_path / "out" / "rejects.jsonl"))
    assert [row["source"]["index"] for row in out] == ["line 1", "line 2", "line 4"]
    assert [(r["where"], r["reason"]) for r in rejects] == [
        ("line 3", "exact duplicate of an earlier conversation"),
        ("line 5", "exact duplicate of an earlier conversation"),
    ]
    assert report["duplicates"] == 2 and report["rejected"] == 2 and report["records_out"] == 3
    assert report["records_in"] == 5


def test_duplicates_and_invalid_records_are_counted_apart(tmp_path: Path) -> None:
    a = GOOD["advertisegen"][0]
    raw = write_lines(tmp_path / "raw.jsonl", [a, {"content": "x"}, a])
    report = run(tmp_path, raw, "advertisegen", on_invalid="skip", max_reject_ratio=1)
    assert (report["records_out"], report["rejected"], report["duplicates"]) == (1, 2, 1)


def test_dedupe_can_be_turned_off(tmp_path: Path) -> None:
    a = GOOD["advertisegen"][0]
    raw = write_lines(tmp_path / "raw.jsonl", [a, a])
    report = run(tmp_path, raw, "advertisegen", dedupe=False)
    assert (report["records_out"], report["rejected"], report["duplicates"]) == (2, 0, 0)


def test_chatglm3_metadata_is_kept(tmp_path: Path) -> None:
    """A call that takes no arguments, and a tool's empty result: ChatGLM3's template writes an empty observation
    (GLM-4's writes nothing for it, and its tokenize job stops naming the record: tests/tokenize/test_splits.py)."""
    call = assistant("{}", metadata="clear_cache")
    raw = write_lines(tmp_path / "raw.jsonl", [conv(user("q"), call, {"role": "observation", "content": ""}, assistant("a"))])
    run(tmp_path, raw, "chatglm3")
    row = next(read_jsonl(tmp_path / "out" / "conv.jsonl"))
    assert row["conversations"][1] == {"role": "assistant", "content": "{}", "loss": True, "metadata": "clear_cache"}
    assert row["conversations"][2]["content"] == ""


# --- an empty conversation with a fixed system prompt is still a reject, not a crash --------------

def test_empty_conversation_with_system_option_is_a_reject(tmp_path: Path) -> None:
    raw = write_lines(tmp_path / "raw.jsonl", [GOOD["chatglm3"][0], conv()])
    report = run(tmp_path, raw, "chatglm3", system="你是助手", on_invalid="skip")
    assert report["rejected"] == 1


def test_empty_conversation_with_system_option_is_a_conversion_error(tmp_path: Path) -> None:
    raw = write_lines(tmp_path / "raw.jsonl", [conv()])
    with pytest.raises(ConversionError, match="line 1"):
        run(tmp_path, raw, "chatglm3", system="你是助手")


# --- a JSON-lines line that is not JSON ------------------------------------------------------------

BROKEN_LINES = ['{"content": "类型#裙", "summary": "红色长裙"}', '{"content": "类型#裤", "summary": ', "not json at all",
                '{"content": "类型#上衣", "summary": "白色T恤"}']


def test_skip_mode_rejects_a_line_that_is_not_json(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = tmp_path / "raw.jsonl"
    raw.write_text("\n".join(BROKEN_LINES) + "\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="glmtune"):
        report = run(tmp_path, raw, "advertisegen", on_invalid="skip")
    rejects = list(read_jsonl(tmp_path / "out" / "rejects.jsonl"))
    assert (report["records_in"], report["records_out"], report["rejected"]) == (4, 2, 2)
    assert report["records_in"] == report["records_out"] + report["rejected"]
    assert report["steps"] == {"invalid_json": 2}
    assert [(r["where"], r["record"]) for r in rejects] == [("line 2", BROKEN_LINES[1]), ("line 3", BROKEN_LINES[2])]
    assert all(r["reason"].startswith("invalid JSON: ") for r in rejects)
    assert "Expecting value" in rejects[1]["reason"]
    assert [row["source"]["index"] for row in read_jsonl(tmp_path / "out" / "conv.jsonl")] == ["line 1", "line 4"]
    assert "2 lines of" in caplog.text and "not valid JSON" in caplog.text


def test_error_mode_stops_at_a_line_that_is_not_json(tmp_path: Path) -> None:
    raw = tmp_path / "raw.jsonl"
    raw.write_text("\n".join(BROKEN_LINES) + "\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=f"^{raw}: line 2: invalid JSON"):
        run(tmp_path, raw, "advertisegen", on_invalid="error")
    assert not (tmp_path / "out").exists()


def test_a_json_array_that_does_not_parse_is_a_file_error_even_with_skip(tmp_path: Path) -> None:
    raw = tmp_path / "raw.json"
    raw.write_text('[\n{"content": "a", "summary": "b"},\n{"content": "c",,}\n]\n', encoding="utf-8")
    with pytest.raises(DataFileError, match=f"^{raw}: line 3: invalid JSON array"):
        run(tmp_path, raw, "advertisegen", on_invalid="skip")


# --- the dataset's fixed system prompt is never dropped silently ----------------------------------

def test_system_prompt_fills_a_tools_only_system_message_and_a_records_own_is_kept_and_counted(tmp_path: Path) -> None:
    records = [
        conv(user("q1"), assistant("a1")),                                       # no system: gets the prompt
        {"tools": TOOLS, "conversations": [user("q2"), assistant("a2")]},       # tools only: the prompt is its text
        conv(system("自己的"), user("q3"), assistant("a3")),                     # its own text: kept, counted
        conv(system("你是助手"), user("q4"), assistant("a4")),                   # the same text: nothing to count
        {"tools": TOOLS, "conversations": [system("带工具"), user("q5"), assistant("a5")]},  # own text with tools: kept
    ]
    raw = write_lines(tmp_path / "raw.jsonl", records)
    report = run(tmp_path, raw, "chatglm3", system="你是助手")
    firsts = [row["conversations"][0] for row in read_jsonl(tmp_path / "out" / "conv.jsonl")]
    assert firsts == [
        {"role": "system", "content": "你是助手", "loss": False},
        {"role": "system", "content": "你是助手", "loss": False, "tools": TOOLS},
        {"role": "system", "content": "自己的", "loss": False},
        {"role": "system", "content": "你是助手", "loss": False},
        {"role": "system", "content": "带工具", "loss": False, "tools": TOOLS},
    ]
    assert report["steps"] == {"system_prompt_kept_from_record": 2}
    assert report["records_out"] == 5


def test_system_prompt_does_not_mask_an_invalid_system_message(tmp_path: Path) -> None:
    raw = write_lines(tmp_path / "raw.jsonl", [conv(system(5), user("q"), assistant("a")), GOOD["chatglm3"][0]])
    report = run(tmp_path, raw, "chatglm3", system="你是助手", on_invalid="skip")
    assert report["steps"] == {"invalid": 1} and report["records_out"] == 1


def test_without_a_system_option_nothing_is_counted(tmp_path: Path) -> None:
    raw = write_lines(tmp_path / "raw.jsonl", [conv(system("s"), user("q"), assistant("a"))])
    assert run(tmp_path, raw, "chatglm3")["steps"] == {}


# --- cleaning output is validated again ----------------------------------------------------------

def test_cleaning_drops_an_emptied_system_message_and_rejects_what_it_left_invalid(tmp_path: Path) -> None:
    records = [
        conv(system("🐳"), user("q1"), assistant("a1")),                       # system emptied: dropped, counted
        conv(user("q2"), assistant("🐳"), user("q3"), assistant("a3")),        # an empty answer is left: invalid
        {"tools": TOOLS, "conversations": [system("🐳"), user("q4"), assistant("a4")]},  # tools stay, text emptied
    ]
    raw = write_lines(tmp_path / "raw.jsonl", records)
    report = run(tmp_path, raw, "chatglm3", clean={"remove_strings": ["🐳"], "drop_empty_turns": False})
    out = [row["conversations"] for row in read_jsonl(tmp_path / "out" / "conv.jsonl")]
    rejects = list(read_jsonl(tmp_path / "out" / "rejects.jsonl"))
    assert out == [
        [{"role": "user", "content": "q1", "loss": False}, {"role": "assistant", "content": "a1", "loss": True}],
        [{"role": "system", "content": "", "loss": False, "tools": TOOLS},
         {"role": "user", "content": "q4", "loss": False}, {"role": "assistant", "content": "a4", "loss": True}],
    ]
    assert [(r["where"], r["reason"]) for r in rejects] == [
        ("line 2", "cleaning left an invalid conversation: message 1: empty assistant message")]
    assert report["steps"] == {"empty_system_dropped": 1, "invalid_after_cleaning": 1, "messages_with_strings_removed": 3}
    assert report["records_in"] == report["records_out"] + report["rejected"]
