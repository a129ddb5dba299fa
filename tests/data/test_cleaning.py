"""Cleaning rules from the GLM-4 LoRA tutorial and common practice, each counted."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import regex

from conftest import shared_data

from glmtune.data.cleaning import Dropped, clean_conversation
from glmtune.data_settings import CleanSettings
from helpers.settings import clean_settings, convert_settings
from glmtune.data.convert import convert_file
from glmtune.io import read_jsonl
from glmtune.data.conversation import message


def test_removes_strings_and_counts_messages() -> None:
    counts: Counter[str] = Counter()
    out = clean_conversation([message("user", "你好🐳"), message("assistant", "🐳我在🐳")], clean_settings(remove_strings=("🐳",)), counts)
    assert [m["content"] for m in out] == ["你好", "我在"]
    assert counts["messages_with_strings_removed"] == 2


def test_drops_the_self_introduction_first_line_only_when_there_is_one() -> None:
    rules, counts = clean_settings(drop_intro_line="好，我是"), Counter()
    out = clean_conversation([message("user", "你是谁"), message("assistant", "您好，我是EmoLLM\n我能陪你聊天。")], rules, counts)
    assert out[1]["content"] == "我能陪你聊天。" and counts["intro_lines_dropped"] == 1
    single = clean_conversation([message("user", "你是谁"), message("assistant", "您好，我是EmoLLM")], rules, counts)
    assert single[1]["content"] == "您好，我是EmoLLM" and counts["intro_lines_dropped"] == 1


def test_the_intro_phrase_below_the_first_line_leaves_the_answer_whole() -> None:
    """"很好，我是说…" in an answer's body is no self-introduction: its unrelated first line stays, and is counted."""
    rules, counts = clean_settings(drop_intro_line="好，我是"), Counter()
    answer = "我理解你的感受。\n你好，我是说，焦虑是很正常的。\n我们慢慢来。"
    out = clean_conversation([message("user", "我很焦虑"), message("assistant", answer)], rules, counts)
    assert out[1]["content"] == answer
    assert counts["intro_phrase_not_on_first_line"] == 1 and counts["intro_lines_dropped"] == 0


def test_strings_removed_counts_only_messages_a_removed_string_changed() -> None:
    """With drop_intro_line too, a message only it changed is not counted as one a string was removed from."""
    rules, counts = clean_settings(remove_strings=("🐳",), drop_intro_line="好，我是"), Counter()
    clean_conversation([message("user", "你是谁"), message("assistant", "您好，我是EmoLLM\n我能陪你聊天🐳。"),
                        message("user", "嗯"), message("assistant", "您好，我是EmoLLM\n我在。")], rules, counts)
    assert counts["messages_with_strings_removed"] == 1 and counts["intro_lines_dropped"] == 2


def test_an_exchange_emptied_by_cleaning_is_dropped_and_the_rest_kept() -> None:
    counts: Counter[str] = Counter()
    conversation = [message("system", "s"), message("user", "一"), message("assistant", "🐳"), message("user", "二"), message("assistant", "好")]
    out = clean_conversation(conversation, clean_settings(remove_strings=("🐳",)), counts)
    assert [m["content"] for m in out] == ["s", "二", "好"] and counts["empty_turns_dropped"] == 1


def test_a_system_message_emptied_by_cleaning_is_dropped_and_counted() -> None:
    counts: Counter[str] = Counter()
    conversation = [message("system", "🐳"), message("user", "q"), message("assistant", "a")]
    out = clean_conversation(conversation, clean_settings(remove_strings=("🐳",)), counts)
    assert [m["role"] for m in out] == ["user", "assistant"] and counts["empty_system_dropped"] == 1
    # an originally empty system message is not cleaning's doing: left to the schema
    untouched = clean_conversation([message("system", ""), *conversation[1:]], clean_settings(remove_strings=("🐳",)), Counter())
    assert [m["role"] for m in untouched] == ["system", "user", "assistant"]


def test_remove_strings_acts_on_content_not_on_tools() -> None:
    tools = [{"name": "🐳", "description": "🐳 facts"}]
    counts: Counter[str] = Counter()
    conversation = [message("system", "🐳", tools=tools), message("user", "q"), message("assistant", "a")]
    out = clean_conversation(conversation, clean_settings(remove_strings=("🐳",)), counts)
    assert out[0] == {"role": "system", "content": "", "loss": False, "tools": [{"name": "🐳", "description": "🐳 facts"}]}
    assert counts == Counter({"messages_with_strings_removed": 1})


@pytest.mark.parametrize(
    ("rules", "conversation", "reason"),
    [
        (clean_settings(remove_strings=("🐳",)), [message("user", "q"), message("assistant", "🐳")], "no exchange"),
        (clean_settings(min_answer_chars=5), [message("user", "q"), message("assistant", "短")], "fewer than min_answer_chars 5"),
        (clean_settings(max_chars=3), [message("user", "问题"), message("assistant", "回答")], "more than max_chars 3"),
    ],
    ids=["emptied", "too-short", "too-long"],
)
def test_filtered_conversations_raise_dropped_with_reason(rules: CleanSettings, conversation: list, reason: str) -> None:
    with pytest.raises(Dropped, match=reason):
        clean_conversation(conversation, rules, Counter())


def test_convert_writes_cleaning_drops_to_rejects_and_counts_steps(tmp_path: Path) -> None:
    raw = tmp_path / "raw.jsonl"
    rows = [{"content": "a", "summary": "好的🐳"}, {"content": "b", "summary": "🐳"}, {"content": "c", "summary": "好的🐳"}]
    raw.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    report = convert_file(raw, tmp_path / "out.jsonl", tmp_path / "rej.jsonl", tmp_path / "rep.json", "advertisegen", "t",
                          convert_settings(clean={"remove_strings": ["🐳"]}))
    assert (report["records_in"], report["records_out"], report["rejected"]) == (3, 2, 1)
    assert report["steps"] == {"dropped_empty": 1, "empty_turns_dropped": 1, "messages_with_strings_removed": 3}
    assert [r["reason"] for r in read_jsonl(tmp_path / "rej.jsonl")] == ["cleaning: no exchange with a non-empty question and answer is left"]


def test_tutorial_cleaning_on_real_emollm_self_cognition(tmp_path: Path) -> None:
    """The tutorial's rule on its own data: 15 answers contain "您好，我是EmoLLM", none with a newline after it,
    so no first line is dropped (one of them is an exact duplicate record, removed by dedupe)."""
    raw = shared_data("EmoLLM/self_cognition_EmoLLM.json")
    report = convert_file(raw, tmp_path / "o.jsonl", tmp_path / "r.jsonl", tmp_path / "p.json", "alpaca", "self",
                          convert_settings(clean={"remove_strings": ["🐳"], "drop_intro_line": "好，我是"}))
    assert report["records_in"] == report["records_out"] + report["rejected"]
    assert report["steps"].get("intro_lines_dropped", 0) == 0
    answers = [row["conversations"][-1]["content"] for row in read_jsonl(tmp_path / "o.jsonl")]
    assert sum("您好，我是EmoLLM" in a for a in answers) == 14 and report["duplicates"] == 1


def test_replace_fills_placeholders_before_the_other_steps() -> None:
    counts: Counter[str] = Counter()
    rules = clean_settings(replace={"{{name}}": "小智", "{{author}}": "智谱"}, remove_strings=("🐳",))
    out = clean_conversation([message("user", "你是谁"), message("assistant", "我是{{name}}🐳，由{{author}}开发。")], rules, counts)
    assert out[1]["content"] == "我是小智，由智谱开发。"
    assert counts["messages_with_replacements"] == 1 and counts["messages_with_strings_removed"] == 1


@pytest.mark.parametrize("filled", [False, True], ids=["left", "filled"])
def test_llamafactory_identity_placeholders_are_warned_about_or_filled(tmp_path: Path, filled: bool,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """LLaMA-Factory's identity.json: 85 of its 91 records say {{name}} / {{author}}, to be filled before training."""
    raw = shared_data("llamafactory/identity.json")
    clean = {"replace": {"{{name}}": "小智", "{{author}}": "智谱"}} if filled else {}
    with caplog.at_level("WARNING", logger="glmtune.data.convert"):
        report = convert_file(raw, tmp_path / "o.jsonl", tmp_path / "r.jsonl", tmp_path / "p.json", "alpaca", "identity",
                              convert_settings(clean=clean))
    texts = [m["content"] for row in read_jsonl(tmp_path / "o.jsonl") for m in row["conversations"]]
    assert report["records_out"] == 91
    if filled:
        assert report["steps"]["messages_with_replacements"] == 85 and "records_with_placeholders_left" not in report["steps"]
        assert not any("{{" in text for text in texts) and sum("小智" in text or "智谱" in text for text in texts) == 85
        assert "placeholders" not in caplog.text
    else:
        assert report["steps"]["records_with_placeholders_left"] == 85
        assert sum("{{name}}" in text for text in texts) > 0  # kept as given: a warning, not a silent edit
        assert "85 kept records hold template placeholders" in caplog.text
        assert "{{author}} (" in caplog.text and "{{name}} (" in caplog.text and "clean.replace: {'{{author}}': ..." in caplog.text


def test_a_rule_that_matched_nothing_is_reported_with_zero(tmp_path: Path) -> None:
    """Every rule set in `clean` has its count in the report, 0 included: an empty `steps` reads as "no rule set"."""
    raw = tmp_path / "raw.jsonl"
    raw.write_text(json.dumps({"content": "a", "summary": "一个足够长的回答"}, ensure_ascii=False) + "\n", encoding="utf-8")
    clean = {"remove_strings": ["🐳"], "drop_intro_line": "好，我是", "min_answer_chars": 2, "max_chars": 1000}
    report = convert_file(raw, tmp_path / "out.jsonl", tmp_path / "rej.jsonl", tmp_path / "rep.json", "advertisegen", "t",
                          convert_settings(clean=clean))
    assert report["records_out"] == 1
    assert report["steps"] == {"messages_with_strings_removed": 0, "intro_lines_dropped": 0, "dropped_short": 0,
                               "dropped_long": 0}
    assert json.loads((tmp_path / "rep.json").read_text(encoding="utf-8"))["steps"] == report["steps"]


def tool_exchange(question: str, answer: str = "晴，25度") -> list[dict]:
    return [message("user", question), message("assistant", '{"city": "北京"}', metadata="get_weather"),
            message("observation", '{"temp": 25}', loss=False), message("assistant", answer)]


@pytest.mark.parametrize(("question", "answer"), [("", "晴，25度"), ("北京天气？", " ")], ids=["empty-question", "empty-answer"])
def test_an_empty_side_drops_its_whole_exchange_tool_call_and_observation_included(question: str, answer: str) -> None:
    """Not the empty message alone: that left the call's observation after a plain answer (the model then learns to
    ask for an observation without calling anything), or the question without its answer."""
    counts: Counter[str] = Counter()
    first = [message("user", "你好"), message("assistant", "你好！")]
    out = clean_conversation([*first, *tool_exchange(question, answer), *first], clean_settings(), counts)
    assert out == [*first, *first] and counts["empty_turns_dropped"] == 1


def test_an_observation_emptied_by_cleaning_stays_a_tools_empty_result() -> None:
    """Not an empty turn: ChatGLM3's template writes it; GLM-4's tokenize job stops naming the record."""
    counts: Counter[str] = Counter()
    first = [message("user", "你好"), message("assistant", "你好！")]
    exchange = tool_exchange("北京天气？")
    exchange[2] = message("observation", "🐳", loss=False)
    out = clean_conversation([*first, *exchange], clean_settings(remove_strings=("🐳",)), counts)
    assert out[4] == message("observation", "", loss=False) and len(out) == 6 and counts["empty_turns_dropped"] == 0


def test_removing_an_emoji_takes_its_presentation_selector_and_leaves_no_invisible_answer() -> None:
    """❤️ is ❤ and U+FE0F; 👩‍💼 is 👩, a zero-width joiner and 💼. An answer left with the selector or the joiner
    alone showed nothing but passed for text (EmoLLM's role-play files hold both) and was trained."""
    counts: Counter[str] = Counter()
    rules = clean_settings(remove_strings=("❤", "👩", "💼"))
    out = clean_conversation([message("user", "喜欢我吗"), message("assistant", "喜欢❤️呀"), message("user", "你是谁"),
                              message("assistant", "👩\u200d💼"), message("user", "再说一次"), message("assistant", "❤️")],
                             rules, counts)
    assert [m["content"] for m in out] == ["喜欢我吗", "喜欢呀"] and counts["empty_turns_dropped"] == 2


def test_convert_names_the_first_record_that_lost_an_exchange(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    raw = tmp_path / "raw.jsonl"
    whole = [message("user", "你好"), message("assistant", "你好！")]
    rows = [{"conversations": whole}, {"conversations": [*whole, *tool_exchange("")]}]
    raw.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    with caplog.at_level("WARNING"):
        report = convert_file(raw, tmp_path / "out.jsonl", tmp_path / "rej.jsonl", tmp_path / "rep.json", "chatglm3", "t",
                              convert_settings(dedupe=False))
    assert report["records_out"] == 2 and report["steps"]["empty_turns_dropped"] == 1
    assert "1 kept records lost an exchange with an empty question or answer (clean.drop_empty_turns" in caplog.text
    assert f"first at {raw}: line 2" in caplog.text
    assert [row["conversations"] for row in read_jsonl(tmp_path / "out.jsonl")][1] == whole


def test_removing_an_emoji_takes_the_whole_character_it_is_part_of() -> None:
    """A skin tone (👍🏽), a zero-width-joined sequence (🏃‍♀️) and a flag are one character on screen: removing the base
    left a lone 🏽 as a whole trained answer, or a joiner and ♀️ in the text. A CRLF is not one character here."""
    counts: Counter[str] = Counter()
    rules = clean_settings(remove_strings=("👍", "🏃", "💪", "🇨", "\r"))
    out = clean_conversation([message("user", "谢谢你"), message("assistant", "👍🏽"), message("user", "我想去跑步"),
                              message("assistant", "太好了🏃\u200d♀\ufe0f！坚持就是胜利💪🏼"),
                              message("user", "加油🇨🇳"), message("assistant", "一起\r\n努力")], rules, counts)
    assert [m["content"] for m in out] == ["我想去跑步", "太好了！坚持就是胜利", "加油", "一起\n努力"]
    assert counts["empty_turns_dropped"] == 1


def test_removing_a_part_of_a_character_leaves_the_rest_of_it() -> None:
    """A skin tone, the presentation selector, a Thai vowel sign removed alone: the character they were part of stays
    (removing U+FE0F took 带 with it from 纽带️, and 👍 from 👍🏻)."""
    rules = clean_settings(remove_strings=("\ufe0f", "🏻", "\u0e35"))
    out = clean_conversation([message("user", "纽带\ufe0f是什么"), message("assistant", "👍🏻 1\ufe0f\u20e3 ก\u0e35\u0e48")],
                             rules, Counter())
    assert [m["content"] for m in out] == ["纽带是什么", "👍 1\u20e3 ก\u0e48"]


@pytest.mark.skipif(not shared_data("EmoLLM/aiwei.json").exists(), reason="shared data not present")
def test_no_skin_tone_is_left_without_its_emoji_in_real_emollm_role_play(tmp_path: Path) -> None:
    """aiwei.json writes 👍🏻, 💪🏼, 👉🏻: with their bases removed, no skin-tone modifier is left (each one in the text
    follows an emoji that takes one, by the Unicode properties)."""
    report = convert_file(shared_data("EmoLLM/aiwei.json"), tmp_path / "o.jsonl", tmp_path / "r.jsonl",
                          tmp_path / "p.json", "emollm", "aiwei", convert_settings(clean={"remove_strings": ["👍", "💪"]}))
    assert report["steps"]["messages_with_strings_removed"] > 0
    text = json.dumps([row["conversations"] for row in read_jsonl(tmp_path / "o.jsonl")], ensure_ascii=False)
    assert "👍" not in text and "💪" not in text
    assert regex.findall(r"\p{Emoji_Modifier}", text) == regex.findall(r"(?<=\p{Emoji_Modifier_Base})\p{Emoji_Modifier}", text)
    assert regex.findall(r"\p{Emoji_Modifier}", text)  # 👉🏻 and 💃🏻 keep theirs


def test_a_rule_that_changed_nothing_is_warned_of(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A string found nowhere (the tutorial's 🐳 is in none of EmoLLM's files), and an intro phrase `replace`, applied
    first, had rewritten: the report's one counter could not tell them from rules at work."""
    raw = tmp_path / "raw.jsonl"
    row = {"instruction": "你是谁", "input": "", "output": "您好，我是EmoLLM。\n我能陪你聊天😊"}
    raw.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    clean = {"replace": {"EmoLLM": "小智"}, "remove_strings": ["🐳", "😊"], "drop_intro_line": "您好，我是EmoLLM"}
    with caplog.at_level("WARNING", logger="glmtune.data.convert"):
        report = convert_file(raw, tmp_path / "o.jsonl", tmp_path / "r.jsonl", tmp_path / "p.json", "alpaca", "self",
                              convert_settings(clean=clean))
    assert report["steps"]["messages_with_strings_removed"] == 1 and report["steps"]["intro_lines_dropped"] == 0
    assert "self: clean.remove_strings '🐳' found in no message: nothing removed" in caplog.text and "'😊'" not in caplog.text
    assert "clean.drop_intro_line '您好，我是EmoLLM' is in no answer: nothing dropped (clean.replace runs first" in caplog.text
