"""Keys a converter never reads are counted in the report and named in the log (glmtune.data.unread), on small files
through convert_file: a field the model will not see is not dropped without a word."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from glmtune.data.convert import convert_file
from glmtune.data.unread import mark_carried, tracked, unread
from glmtune.io import read_jsonl
from helpers.settings import convert_settings

TOOL = {"name": "get_weather", "description": "查询天气",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def run(tmp_path: Path, records: list[Any], fmt: str, **options: Any) -> dict[str, Any]:
    raw = tmp_path / "raw.jsonl"
    raw.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return convert_file(raw, tmp_path / "conv.jsonl", tmp_path / "rejects.jsonl", tmp_path / "report.json", fmt, "ds",
                        convert_settings(**options))


def test_keys_the_format_does_not_read_are_counted_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    records = [{"id": i, "messages": [{"role": "user", "content": "问"},
                                      {"role": "assistant", "content": "答", "reasoning_content": f"想{i}"}]}
               for i in range(3)]
    records.append({"messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": "另一答"}]})
    with caplog.at_level(logging.WARNING, logger="glmtune.data.convert"):
        report = run(tmp_path, records, "glm4")
    assert report["keys_not_read"] == {"id": 3, "messages[].reasoning_content": 3}
    assert json.loads((tmp_path / "report.json").read_text())["keys_not_read"] == report["keys_not_read"]
    assert ("ds: records hold keys format glm4 does not read, left out of the conversations: id (3 records), "
            "messages[].reasoning_content (3 records)") in caplog.text


def test_tools_carried_whole_and_mapped_columns_count_as_read(tmp_path: Path) -> None:
    """A tool rides on the system message whole, nested parameters and all; an alpaca record's unmapped `history` is
    named, its mapped one not."""
    glm4 = [{"messages": [{"role": "system", "content": "", "tools": [TOOL]}, {"role": "user", "content": "北京天气？"},
                          {"role": "assistant", "content": '{"city": "北京"}', "metadata": "get_weather"},
                          {"role": "observation", "content": "25度"}, {"role": "assistant", "content": "北京25度"}]}]
    assert run(tmp_path, glm4, "glm4")["keys_not_read"] == {}
    alpaca = [{"instruction": "再说一遍", "output": "好的", "history": [["你好", "你好！"]], "system": "你是助手"}]
    assert run(tmp_path, alpaca, "alpaca")["keys_not_read"] == {}
    columns = {"prompt": "instruction", "query": None, "response": "output", "system": None, "history": None, "tools": None}
    assert run(tmp_path, alpaca, "alpaca", columns=columns)["keys_not_read"] == {"history": 1, "system": 1}


def test_a_rejected_records_keys_are_not_counted(tmp_path: Path) -> None:
    records = [{"id": 1, "messages": [{"role": "user", "content": "问"}]},  # no answer: rejected
               {"messages": [{"role": "user", "content": "问"}, {"role": "assistant", "content": "答"}]}]
    report = run(tmp_path, records, "glm4", on_invalid="skip")
    assert (report["rejected"], report["keys_not_read"]) == (1, {})
    assert len(list(read_jsonl(tmp_path / "conv.jsonl"))) == 1


def test_tracking_marks_what_was_looked_at() -> None:
    record = tracked({"a": 1, "b": {"c": 2, "d": 3}, "e": [{"f": 4, "g": 5}], "h": {"i": 6}})
    assert record["a"] == 1 and record["b"].get("c") == 2 and "f" in record["e"][0]
    carried = record["h"]
    mark_carried([{"tools": [carried]}])
    assert unread(record) == {"b.d", "e[].g"}
    assert json.dumps(record) == '{"a": 1, "b": {"c": 2, "d": 3}, "e": [{"f": 4, "g": 5}], "h": {"i": 6}}'
