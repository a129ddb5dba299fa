"""Files that must not convert quietly: empty, all or mostly rejected, the wrong shape; and cleaning that does nothing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from test_convert import GOOD, run, write_lines

from glmtune.data.convert import ConversionError
from glmtune.data.records import DataFileError
from glmtune.io import read_jsonl

# --- a file that yields nothing stops the job -------------------------------------------------------

@pytest.mark.parametrize("text", ["", " \n\t\r\n", "\ufeff\n", "[]"])
@pytest.mark.parametrize("on_invalid", ["error", "skip"])
def test_an_empty_file_is_an_error_naming_it(tmp_path: Path, text: str, on_invalid: str) -> None:
    raw = tmp_path / "raw.jsonl"
    raw.write_text(text, encoding="utf-8")
    with pytest.raises(ConversionError, match=f"^{raw}: no records: the file is empty.*check dataset 'ds''s files"):
        run(tmp_path, raw, "advertisegen", on_invalid=on_invalid)
    assert not (tmp_path / "out").exists()


def test_all_records_rejected_is_an_error_with_the_top_reasons(tmp_path: Path) -> None:
    raw = tmp_path / "raw.jsonl"
    raw.write_text('{"content": "a"}\nnot json\n{"content": "b"}\n', encoding="utf-8")
    with pytest.raises(ConversionError) as info:
        run(tmp_path, raw, "advertisegen", on_invalid="skip")
    message = str(info.value)
    assert message.startswith(f"{raw}: all 3 records were rejected, so dataset 'ds' yields nothing")
    assert "2 x " in message and "(first at line 1)" in message and "1 x invalid JSON" in message
    assert "(first at line 2)" in message and "format: advertisegen" in message
    assert not (tmp_path / "out").exists()


def test_a_top_level_object_stops_conversion_in_both_modes(tmp_path: Path) -> None:
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps({"data": GOOD["advertisegen"]}, indent=2, ensure_ascii=False), encoding="utf-8")
    for on_invalid in ("error", "skip"):
        with pytest.raises(DataFileError, match=f"^{raw}: line 1: top level is a JSON object"):
            run(tmp_path, raw, "advertisegen", on_invalid=on_invalid)
    assert not (tmp_path / "out").exists()


def test_a_one_line_wrapper_stops_conversion_like_the_pretty_printed_one(tmp_path: Path) -> None:
    """json.dump({"data": records}) writes one line, which parses as one JSON-lines record: beside a good file with
    on_invalid: skip it was one reject, under max_reject_ratio, and its records were lost without a word."""
    good = write_lines(tmp_path / "good.jsonl", GOOD["advertisegen"] * 3)
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"data": GOOD["advertisegen"]}), encoding="utf-8")
    says = (f"^{wrapped}: line 1: top level is a JSON object whose 'data' holds 2 objects, not one record that format: "
            "advertisegen reads")
    for on_invalid in ("error", "skip"):
        with pytest.raises(DataFileError, match=says):
            run(tmp_path, [good, wrapped], "advertisegen", on_invalid=on_invalid, dedupe=False)
    assert not (tmp_path / "out").exists()


def test_a_one_record_file_whose_record_holds_a_list_of_objects_converts(tmp_path: Path) -> None:
    raw = write_lines(tmp_path / "one.jsonl", GOOD["chatglm3"][:1])
    assert run(tmp_path, raw, "chatglm3")["records_out"] == 1


def test_a_one_record_file_whose_conversation_is_invalid_is_rejected_for_its_own_reason(tmp_path: Path) -> None:
    """Its messages are a list of objects the format does not read as records: no wrapper, a bad record (h24: the
    wrapper check had stopped the dataset, naming a wrapper, where on_invalid: skip rejects the one record)."""
    good = write_lines(tmp_path / "good.jsonl", GOOD["chatglm3"])
    bad = {**GOOD["chatglm3"][0], "conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}
    one = write_lines(tmp_path / "one.jsonl", [bad])
    report = run(tmp_path, [good, one], "chatglm3", on_invalid="skip", dedupe=False)
    assert (report["records_out"], report["rejected"]) == (len(GOOD["chatglm3"]), 1)
    with pytest.raises(Exception, match="empty assistant message") as caught:
        run(tmp_path, [good, one], "chatglm3", on_invalid="error", dedupe=False)
    assert "wrapped" not in str(caught.value)


def test_a_line_separator_inside_a_string_keeps_the_record_and_the_line_numbers(tmp_path: Path) -> None:
    records = [{"content": "类型#裙\u2028颜色#红色", "summary": "红色\u2029长裙\u0085"}, GOOD["advertisegen"][1]]
    raw = write_lines(tmp_path / "raw.jsonl", records)
    report = run(tmp_path, raw, "advertisegen", on_invalid="skip")
    assert (report["records_in"], report["records_out"], report["rejected"]) == (2, 2, 0)
    out = list(read_jsonl(tmp_path / "out" / "conv.jsonl"))
    assert [row["source"]["index"] for row in out] == ["line 1", "line 2"]
    assert {row["source"]["file"] for row in out} == {str(raw)}  # a dataset's train and test files both have a line 1
    assert out[0]["conversations"][0]["content"] == records[0]["content"]


def test_more_rejects_than_max_reject_ratio_stop_with_the_top_reasons(tmp_path: Path) -> None:
    good = GOOD["advertisegen"][0]
    raw = write_lines(tmp_path / "raw.jsonl", [good, {"content": "x"}, {"content": "y"}, {"summary": "z"}])
    with pytest.raises(ConversionError) as info:
        run(tmp_path, raw, "advertisegen", on_invalid="skip")  # 3 of 4 rejected: above the default 0.5
    message = str(info.value)
    assert message.startswith(f"{raw}: 3 of 4 records rejected (75%; duplicates not counted), more than "
                              "datasets.ds.max_reject_ratio 0.5")
    assert "2 x missing key 'summary' (first at line 2)" in message and "raise max_reject_ratio" in message
    assert not (tmp_path / "out").exists()
    report = run(tmp_path, raw, "advertisegen", on_invalid="skip", max_reject_ratio=0.75)  # exactly at the limit
    assert (report["records_out"], report["rejected"]) == (1, 3)


def test_drop_intro_line_that_changes_nothing_is_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    records = [{"content": "你是谁", "summary": "好，我是小助手。"}, {"content": "你好", "summary": "好，我是小助手。\n很高兴见到你。"}]
    raw = write_lines(tmp_path / "raw.jsonl", records)
    with caplog.at_level("WARNING"):
        report = run(tmp_path, raw, "advertisegen", clean={"drop_intro_line": "好，我是"})
    assert report["steps"]["intro_lines_dropped"] == 1 and report["steps"]["intro_line_matched_one_line_answer"] == 1
    assert "drop_intro_line matched 1 one-line answers and changed nothing" in caplog.text


# --- a key written twice in a record: JSON keeps the last value, which may not be the one meant -------

def test_a_record_with_a_key_twice_stops_naming_it_or_is_rejected_with_the_reason(tmp_path: Path) -> None:
    good = json.dumps(GOOD["advertisegen"][0], ensure_ascii=False)
    twice = '{"content": "类型#裤", "summary": "第一个答案", "summary": "第二个答案"}'
    for name, text, where in (("raw.jsonl", f"{good}\n{twice}\n", "line 2"), ("raw.json", f"[{good},\n{twice}]", "record 1")):
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        raw = folder / name
        raw.write_text(text, encoding="utf-8")
        with pytest.raises(ConversionError, match=f"^{raw}: {where}: summary: written twice in one object; JSON keeps "
                                                  "only the last value"):
            run(folder, raw, "advertisegen")
        assert not (folder / "out").exists()
        report = run(folder, raw, "advertisegen", on_invalid="skip")
        assert (report["records_out"], report["rejected"], report["steps"]["invalid"]) == (1, 1, 1)
        rejected = list(read_jsonl(folder / "out" / "rejects.jsonl"))
        assert rejected[0]["where"] == where and rejected[0]["reason"].startswith("summary: written twice")


def test_a_key_twice_inside_a_message_is_named_by_its_path(tmp_path: Path) -> None:
    record = ('{"conversations": [{"role": "user", "content": "你好"}, '
              '{"role": "assistant", "role": "user", "content": "在"}, {"role": "assistant", "content": "好"}]}')
    raw = tmp_path / "raw.jsonl"
    raw.write_text(record + "\n", encoding="utf-8")
    with pytest.raises(ConversionError, match=r"line 1: conversations\[1\]\.role: written twice"):
        run(tmp_path, raw, "chatglm3")


def test_half_an_emoji_stops_naming_it_or_is_rejected_and_written_as_the_file_had_it(tmp_path: Path) -> None:
    """A JSON escape of a lone surrogate (an emoji cut in two) reads into a str no UTF-8 file or tokenizer can hold:
    writing the output failed with a UnicodeEncodeError naming no record."""
    cut = '{"conversation": [{"system": "你是心理咨询师", "input": "我很难过", "output": "抱抱你\\ud83d"}]}'
    whole = '{"conversation": [{"system": "你是心理咨询师", "input": "我很开心", "output": "太好了\\ud83d\\ude00"}]}'
    raw = tmp_path / "raw.jsonl"
    raw.write_text(f"{whole}\n{cut}\n", encoding="utf-8")
    with pytest.raises(ConversionError, match=r"^.*raw.jsonl: line 2: conversation\[0\]\.output \(\\ud83d at "
                                              r"character 3\): a lone UTF-16 surrogate, half of a character"):
        run(tmp_path, raw, "emollm")
    assert not (tmp_path / "out").exists()
    report = run(tmp_path, raw, "emollm", on_invalid="skip")
    assert (report["records_out"], report["rejected"]) == (1, 1)
    assert next(read_jsonl(tmp_path / "out" / "conv.jsonl"))["conversations"][-1]["content"] == "太好了\U0001f600"
    rejects_text = (tmp_path / "out" / "rejects.jsonl").read_text(encoding="utf-8")
    (rejected,) = list(read_jsonl(tmp_path / "out" / "rejects.jsonl"))
    assert rejected["where"] == "line 2" and rejected["record"]["conversation"][0]["output"] == "抱抱你\ud83d"
    assert "\\ud83d" in rejects_text  # escaped, as the file had it


# --- a wrong format: the message names the format that reads the file, not on_invalid: skip -----------

@pytest.mark.parametrize(("file", "wrong", "right"), [
    ("llamafactory/alpaca_zh_demo.json", "sharegpt", "alpaca"),
    ("AdvertiseGen/dev.glm4_messages.jsonl", "chatglm3", "glm4"),
    ("chatglm3/cognition_train.json", "glm4", "chatglm3"),
    ("EmoLLM/data.json", "alpaca", "emollm"),
    ("AdvertiseGen/dev.json", "prompt_completion", "advertisegen"),
])
def test_a_real_file_under_the_wrong_format_names_the_format_that_reads_it(
        tmp_path: Path, file: str, wrong: str, right: str) -> None:
    from conftest import shared_data

    raw = shared_data(file)
    hint = f"; format: {right} reads the file's first 20 records: is that the file's format? (dataset 'ds' reads it as {wrong})"
    with pytest.raises(ConversionError) as stopped:
        run(tmp_path, raw, wrong)
    assert str(stopped.value).endswith(hint) and "on_invalid: skip" not in str(stopped.value)
    with pytest.raises(ConversionError) as skipped:
        run(tmp_path, raw, wrong, on_invalid="skip")
    assert str(skipped.value).startswith(f"{raw}: all ") and str(skipped.value).endswith(hint)
    assert not (tmp_path / "out").exists()


def test_records_no_format_reads_keep_the_on_invalid_hint(tmp_path: Path) -> None:
    raw = write_lines(tmp_path / "raw.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(ConversionError, match=r"line 1: missing key 'content' \(set on_invalid: skip to write it"):
        run(tmp_path, raw, "advertisegen")


def test_calls_to_functions_the_records_tools_do_not_declare_are_counted_and_warned(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The real glaive tool-call file declares every function it calls; renaming one call's function leaves a valid
    record that teaches calling a function the model was never shown: kept, counted and named."""
    from conftest import shared_data

    rows = json.loads(shared_data("llamafactory/glaive_toolcall_zh_demo.json").read_text(encoding="utf-8"))
    report = run(tmp_path / "as_is", shared_data("llamafactory/glaive_toolcall_zh_demo.json"), "sharegpt", on_invalid="skip")
    assert "records_calling_undeclared_tools" not in report["steps"]
    changed = next(index for index, row in enumerate(rows) if any(turn["from"] == "function_call" for turn in row["conversations"]))
    for turn in rows[changed]["conversations"]:
        if turn["from"] == "function_call":
            turn["value"] = json.dumps({**json.loads(turn["value"]), "name": "not_declared"}, ensure_ascii=False)
    raw = tmp_path / "glaive.json"
    raw.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="glmtune.data.convert"):
        report = run(tmp_path / "renamed", raw, "sharegpt", on_invalid="skip")
    assert report["steps"]["records_calling_undeclared_tools"] == 1
    assert f"not_declared (1 records, first at {raw}: record {changed})" in caplog.text
