"""Metrics checked against values worked out by hand from token counts, not by re-calling the libraries."""

from __future__ import annotations

import logging
import math
from fractions import Fraction as F
from pathlib import Path

import jieba
import pytest

from glmtune.evaluate.metrics import METRIC_KEYS, corpus_scores, score_pair


def f1(p: F, r: F) -> float:
    return float(2 * p * r / (p + r))


# rouge_chinese adds 1e-8 to the F denominator and the demo rounds to 4 places, so allow that much.
ROUGE_TOL = 1e-4


def test_jieba_is_quiet() -> None:
    assert jieba.default_logger.level >= logging.WARNING


def test_identical_strings_score_full() -> None:
    text = "我们去公园散步"
    assert list(jieba.cut(text)) == ["我们", "去", "公园", "散步"]  # 4 words: one 4-gram, matched
    scores = score_pair(text, text)
    for key in ("rouge-1", "rouge-2", "rouge-l", "bleu-4-char"):
        assert scores[key] == pytest.approx(100.0, abs=ROUGE_TOL)
    assert scores["bleu-4"] == pytest.approx(1.0)  # word BLEU stays on the 0-1 scale


def test_identical_short_text_word_bleu_below_one() -> None:
    # Demo behaviour worth knowing: 3 words have no 4-gram, so p4 = 0/1, which method3 turns into 1/2.
    text = "今天天气很好"
    assert list(jieba.cut(text)) == ["今天天气", "很", "好"]
    scores = score_pair(text, text)
    assert scores["rouge-1"] == pytest.approx(100.0, abs=ROUGE_TOL)
    assert scores["bleu-4"] == pytest.approx(0.5**0.25)
    assert scores["bleu-4-char"] == pytest.approx(100.0, abs=ROUGE_TOL)  # 6 chars: all 4 orders match


def test_partial_overlap_same_length() -> None:
    pred, ref = "我喜欢吃苹果", "我喜欢吃香蕉"
    assert list(jieba.cut(pred)) == ["我", "喜欢", "吃", "苹果"]
    assert list(jieba.cut(ref)) == ["我", "喜欢", "吃", "香蕉"]
    s = score_pair(pred, ref)
    # unigrams: 我 喜欢 吃 shared -> p = r = 3/4
    assert s["rouge-1"] == pytest.approx(100 * f1(F(3, 4), F(3, 4)), abs=ROUGE_TOL)
    # bigrams: (我,喜欢) (喜欢,吃) shared of 3 each -> p = r = 2/3
    assert s["rouge-2"] == pytest.approx(100 * f1(F(2, 3), F(2, 3)), abs=ROUGE_TOL)
    # LCS = 我 喜欢 吃 = 3 of 4 words each side
    assert s["rouge-l"] == pytest.approx(100 * f1(F(3, 4), F(3, 4)), abs=ROUGE_TOL)
    # word BLEU: p1 3/4, p2 2/3, p3 1/2 (我喜欢吃 matches), p4 0/1 -> method3 gives 1/(2*1); BP = 1
    assert s["bleu-4"] == pytest.approx(float(F(3, 4) * F(2, 3) * F(1, 2) * F(1, 2)) ** 0.25)
    # char BLEU over 我喜欢吃苹果 vs 我喜欢吃香蕉: p1 4/6, p2 3/5, p3 2/4, p4 1/3; BP = 1
    char = float(F(4, 6) * F(3, 5) * F(2, 4) * F(1, 3)) ** 0.25
    assert s["bleu-4-char"] == pytest.approx(100 * char, abs=ROUGE_TOL)


def test_partial_overlap_shorter_prediction() -> None:
    pred, ref = "我爱上海", "我爱北京天安门"
    assert list(jieba.cut(pred)) == ["我", "爱", "上海"]
    assert list(jieba.cut(ref)) == ["我", "爱", "北京", "天安门"]
    s = score_pair(pred, ref)
    # unigrams: 2 shared; p = 2/3, r = 2/4 -> F = 4/7
    assert s["rouge-1"] == pytest.approx(100 * f1(F(2, 3), F(2, 4)), abs=ROUGE_TOL)
    assert f1(F(2, 3), F(2, 4)) == pytest.approx(4 / 7)
    # bigrams: only (我,爱) shared; p = 1/2, r = 1/3 -> F = 2/5
    assert s["rouge-2"] == pytest.approx(40.0, abs=ROUGE_TOL)
    # LCS = 我 爱 -> same counts as rouge-1
    assert s["rouge-l"] == pytest.approx(100 * 4 / 7, abs=ROUGE_TOL)
    # word BLEU: p1 2/3, p2 1/2, p3 0/1 -> 1/2, p4 0/1 -> 1/4 (method3 halves again);
    # brevity penalty exp(1 - 4/3) for 3 predicted words against 4
    expected = math.exp(1 - 4 / 3) * float(F(2, 3) * F(1, 2) * F(1, 2) * F(1, 4)) ** 0.25
    assert s["bleu-4"] == pytest.approx(expected)
    # char BLEU: 我爱上海 vs 我爱北京天安门: p1 2/4, p2 1/3, p3 0/2 -> 1/(2*2), p4 0/1 -> 1/(4*1);
    # BP exp(1 - 7/4)
    char = math.exp(1 - 7 / 4) * float(F(2, 4) * F(1, 3) * F(1, 4) * F(1, 4)) ** 0.25
    assert s["bleu-4-char"] == pytest.approx(100 * char, abs=ROUGE_TOL)


def test_no_overlap_scores_zero() -> None:
    s = score_pair("苹果", "香蕉")
    assert all(s[key] == pytest.approx(0.0, abs=ROUGE_TOL) for key in METRIC_KEYS)


@pytest.mark.parametrize(
    ("pred", "ref"),
    [("", "今天天气很好"), ("   \n\t", "今天天气很好"), ("今天天气很好", ""), ("\u3000", " ")],
)
def test_empty_sides_score_zero(pred: str, ref: str) -> None:
    assert score_pair(pred, ref) == dict.fromkeys(METRIC_KEYS, 0.0)


def test_whitespace_around_text_is_stripped() -> None:
    assert score_pair("  今天天气很好\n", "今天天气很好") == score_pair("今天天气很好", "今天天气很好")


def test_corpus_means_and_counts() -> None:
    preds = ["今天天气很好", "我爱上海", "  "]
    refs = ["今天天气很好", "我爱北京天安门", "我喜欢吃苹果"]
    out = corpus_scores(preds, refs)
    assert out["num_samples"] == 3
    assert out["num_empty_predictions"] == 1
    # (100 + 4/7*100 + 0) / 3: the empty prediction counts as a zero in the mean
    assert out["rouge-1"] == pytest.approx((100 + 400 / 7) / 3, abs=ROUGE_TOL)
    assert out["rouge-2"] == pytest.approx((100 + 40) / 3, abs=ROUGE_TOL)
    assert set(out) == {*METRIC_KEYS, "num_samples", "num_empty_predictions"}


def test_corpus_empty_input() -> None:
    out = corpus_scores([], [])
    assert out["num_samples"] == 0 and out["rouge-1"] == 0.0


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="differ in length: 2 != 1"):
        corpus_scores(["a", "b"], ["a"])


JIEBA_RUN = """
import sys
from glmtune.evaluate.metrics import score_pair
print(score_pair("我们去公园散步", "我们去公园")["rouge-1"])
"""


def test_jieba_caches_in_the_users_folder_not_the_shared_temp_folder(tmp_path: Path) -> None:
    """A fresh process: the dictionary cache lands in $XDG_CACHE_HOME/glmtune/jieba (mode 700), none in $TMPDIR."""
    import os
    import subprocess
    import sys

    cache, shared = tmp_path / "cache", tmp_path / "shared-tmp"
    shared.mkdir()
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "TMPDIR": str(shared)}
    done = subprocess.run([sys.executable, "-c", JIEBA_RUN], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = cache / "glmtune" / "jieba"
    assert (folder / "jieba.cache").is_file() and folder.stat().st_mode & 0o777 == 0o700
    assert list(shared.iterdir()) == []


def test_a_caller_can_pass_the_jieba_cache_folder(tmp_path: Path) -> None:
    from glmtune.evaluate.metrics import use_private_jieba_cache

    tokenizer = jieba.Tokenizer()
    assert use_private_jieba_cache(tmp_path / "mine", tokenizer) == tmp_path / "mine"
    tokenizer.initialize()
    assert (tmp_path / "mine" / "jieba.cache").is_file()
    assert jieba.dt.tmp_dir != str(tmp_path / "mine")  # only the tokenizer passed
