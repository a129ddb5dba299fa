"""Evaluation prompts over the tokenize limit: cut as the demos cut them, counted and logged, refused past
tokenize.max_truncated_ratio; with cutoff_len the limit is cutoff_len (LLaMA-Factory has no other), not the
max_input_length default a user of cutoff_len never set."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from helpers.settings import evaluate_settings, model_settings, tokenize_settings

from glmtune.chat_template import encode_prompt, get_template
from glmtune.evaluate.predict import evaluate_model
from glmtune.evaluate.prompts import check_answer_room, generation_prompts
from glmtune.io import read_jsonl, write_jsonl
from glmtune.model.tiny import train_tokenizer

GLM4 = get_template("glm4")
TEXTS = ["你是一个乐于助人的助手", "今天天气怎么样", "请介绍一下这条裙子", "类型#裙*颜色#红色", "你好"]


@pytest.fixture(scope="module")
def tok() -> Any:
    return train_tokenizer(TEXTS, 300, family="glm4")


def conversation(turns: int) -> list[dict[str, Any]]:
    """A system prompt and `turns` user turns (the last one the question), without the answer."""
    messages = [{"role": "system", "content": TEXTS[0]}]
    for turn in range(turns):
        messages += [{"role": "user", "content": TEXTS[1 + turn % 3]}, {"role": "assistant", "content": TEXTS[4]}]
    return messages[:-1]


def test_prompts_within_the_limit_are_whole_and_nothing_is_logged(tok: Any, caplog: pytest.LogCaptureFixture) -> None:
    conversations = [conversation(1), conversation(2)]
    prompts, cut = generation_prompts(tok, GLM4, conversations, tokenize_settings(max_input_length=500), "test.jsonl")
    assert cut == 0 and not caplog.records
    assert prompts == [encode_prompt(tok, GLM4, messages) for messages in conversations]


def test_a_few_cut_prompts_are_cut_as_the_demos_cut_and_logged(tok: Any, caplog: pytest.LogCaptureFixture) -> None:
    conversations = [conversation(1)] * 3 + [conversation(6)]
    short, long = (len(encode_prompt(tok, GLM4, messages)) for messages in (conversations[0], conversations[3]))
    limit = short + 2  # the three one-turn prompts fit; the six-turn one does not
    with caplog.at_level(logging.WARNING, logger="glmtune.evaluate.prompts"):
        prompts, cut = generation_prompts(tok, GLM4, conversations, tokenize_settings(max_input_length=limit), "t.jsonl")
    assert cut == 1 and prompts[3] == encode_prompt(tok, GLM4, conversations[3], max_length=limit)
    assert len(prompts[3]) == limit + 1 < long  # the messages' first `limit` tokens and the <|assistant|> token
    assert prompts[:3] == [encode_prompt(tok, GLM4, conversations[0])] * 3
    (record,) = caplog.records
    assert record.getMessage().startswith(f"t.jsonl: 1 of 4 test prompts (25%) are longer than {limit} tokens "
                                          "(tokenize.max_input_length) and lose their end, the question included")
    assert f"max {long - 1}" in record.getMessage()  # the messages' length, the role token aside


def test_more_cut_than_max_truncated_ratio_stops_naming_the_setting(tok: Any) -> None:
    conversations = [conversation(1), conversation(6), conversation(6)]
    limit = len(encode_prompt(tok, GLM4, conversations[0]))
    with pytest.raises(ValueError, match=r"^evaluate: t.jsonl: 2 of 3 test prompts \(67%\) are longer than .* more than "
                                         r"tokenize.max_truncated_ratio 0.5: raise tokenize.max_input_length"):
        generation_prompts(tok, GLM4, conversations, tokenize_settings(max_input_length=limit), "t.jsonl")
    settings = tokenize_settings(max_input_length=limit, max_truncated_ratio=1)  # 1 lets any cut pass
    assert generation_prompts(tok, GLM4, conversations, settings, "t.jsonl")[1] == 2


def test_with_cutoff_len_the_prompts_keep_cutoff_len_tokens(tok: Any) -> None:
    """A LLaMA-Factory-style config sets cutoff_len and never max_input_length (default 128)."""
    conversations = [conversation(6)] * 2
    long = len(encode_prompt(tok, GLM4, conversations[0]))
    settings = tokenize_settings(max_input_length=8, cutoff_len=long + 10)
    prompts, cut = generation_prompts(tok, GLM4, conversations, settings, "t.jsonl")
    assert cut == 0 and prompts == [encode_prompt(tok, GLM4, conversations[0])] * 2
    with pytest.raises(ValueError, match=r"longer than 20 tokens \(tokenize.cutoff_len\).*raise tokenize.cutoff_len"):
        generation_prompts(tok, GLM4, conversations, tokenize_settings(max_input_length=500, cutoff_len=20), "t.jsonl")


def test_the_evaluate_stage_records_the_cut_prompts(small_run: dict[str, Path], tmp_path: Path) -> None:
    rows = list(read_jsonl(small_run["test"]))[:6]
    write_jsonl(tmp_path / "test.jsonl", rows)
    scores = evaluate_model(small_run["adapter"], tmp_path / "test.jsonl", tmp_path / "p.jsonl", tmp_path / "s.json",
                            evaluate_settings(batch_size=6, max_new_tokens=4, cache="dynamic"),
                            model_settings(template="glm4"), tokenize_settings(max_input_length=500))
    assert scores["prompts_cut"] == 0 and json.loads((tmp_path / "s.json").read_text())["prompts_cut"] == 0
    assert scores["answers_longer_than_max_new_tokens"] == 6  # synthetic ad texts are longer than 4 tokens
    with pytest.raises(ValueError, match=r"6 of 6 test prompts \(100%\) are longer than 4 tokens"):
        evaluate_model(small_run["adapter"], tmp_path / "test.jsonl", tmp_path / "p2.jsonl", tmp_path / "s2.json",
                       evaluate_settings(batch_size=6, max_new_tokens=4, cache="dynamic"),
                       model_settings(template="glm4"), tokenize_settings(max_input_length=4))
    assert not (tmp_path / "s2.json").exists() and not (tmp_path / "p2.jsonl").exists()


def test_generating_past_the_models_positions_stops_before_generating(small_run: dict[str, Path], tmp_path: Path) -> None:
    """The tiny model holds GLM-4-9B-chat's 131,072 positions: a 500-token prompt, its role token and 130,572 new
    tokens would be the 131,073rd (a downloaded model's positions are known first in its jobs)."""
    from glmtune.model.tiny import MAX_POSITIONS

    write_jsonl(tmp_path / "test.jsonl", list(read_jsonl(small_run["test"]))[:2])
    with pytest.raises(ValueError, match=rf"come to {MAX_POSITIONS + 1} tokens, but the model was trained for "
                                         rf"{MAX_POSITIONS} positions"):
        evaluate_model(small_run["adapter"], tmp_path / "test.jsonl", tmp_path / "p.jsonl", tmp_path / "s.json",
                       evaluate_settings(batch_size=2, max_new_tokens=MAX_POSITIONS - 500, cache="dynamic"),
                       model_settings(template="glm4"), tokenize_settings(max_input_length=500))
    assert not (tmp_path / "s.json").exists()


def test_a_test_conversation_the_template_cannot_lay_out_is_refused_naming_its_record(
        small_run: dict[str, Path], tmp_path: Path) -> None:
    """The tokenize job refuses such training data; the test split is not tokenized, so the evaluation checks its own
    (h16: an empty question kept by drop_empty_turns: false was evaluated, and its predictions.jsonl line refused by
    glmtune infer)."""
    rows = list(read_jsonl(small_run["test"]))[:2]
    earlier = [{"role": "user", "content": "", "loss": False}, {"role": "assistant", "content": "好", "loss": True}]
    rows[1]["conversations"] = [*earlier, *rows[1]["conversations"]]
    write_jsonl(tmp_path / "test.jsonl", rows)
    with pytest.raises(ValueError, match=r"^evaluate: .*test.jsonl: .*: message 0 \(user\) is empty, and the glm4 chat "
                                         r"template writes nothing"):
        evaluate_model(small_run["adapter"], tmp_path / "test.jsonl", tmp_path / "p.jsonl", tmp_path / "s.json",
                       evaluate_settings(batch_size=2, max_new_tokens=4, cache="dynamic"),
                       model_settings(template="glm4"), tokenize_settings(max_input_length=500))
    assert not (tmp_path / "s.json").exists()


def test_answers_longer_than_max_new_tokens_are_counted_and_logged(tok: Any, caplog: pytest.LogCaptureFixture) -> None:
    """What the model writes after <|assistant|>, as the official GLM-4 template renders an answer (`<|assistant|>` +
    metadata + `\n` + content, tokenized whole): the newline too. Counting the text alone said an answer of exactly
    max_new_tokens fitted, and its last token was cut (h13)."""
    references = [TEXTS[4], TEXTS[4], TEXTS[0] * 4]
    answers = [{"role": "assistant", "content": text, "loss": True} for text in references]
    lengths = [len(tok.encode("\n" + text, add_special_tokens=False)) for text in references]
    assert lengths[2] > len(tok.encode(references[2], add_special_tokens=False))  # the case under test
    with caplog.at_level(logging.WARNING, logger="glmtune.evaluate.prompts"):
        assert check_answer_room(tok, GLM4, answers, evaluate_settings(max_new_tokens=lengths[2]), "t.jsonl") == 0
        assert not caplog.records
        assert check_answer_room(tok, GLM4, answers, evaluate_settings(max_new_tokens=lengths[2] - 1), "t.jsonl") == 1
    (record,) = caplog.records
    assert record.getMessage() == (
        f"t.jsonl: 1 of 3 test answers (33%) are longer than evaluate.max_new_tokens {lengths[2] - 1} tokens, so no "
        f"prediction can match them whole; answer lengths p50 {lengths[0]}, p95 {lengths[2]}, max {lengths[2]}; "
        f"evaluate.max_new_tokens: {lengths[2]} keeps 95 % whole")
