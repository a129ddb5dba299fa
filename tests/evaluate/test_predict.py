"""glmtune.evaluate.predict: one evaluation per output folder at a time, and none that was asked for again meanwhile
writes its files (its settings may be the older ones)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.settings import evaluate_settings, model_settings, tokenize_settings

from glmtune.evaluate import predict
from glmtune.io import read_jsonl, write_jsonl
from glmtune.train.holder import Superseded


def _evaluate(small_run: dict[str, Path], out: Path) -> dict:
    return predict.evaluate_model(small_run["adapter"], out / "test.jsonl", out / "eval" / "predictions.jsonl",
                                  out / "eval" / "scores.json", evaluate_settings(batch_size=4, max_new_tokens=4,
                                                                                  cache="dynamic"),
                                  model_settings(template="glm4"), tokenize_settings(max_input_length=500))


def test_an_evaluation_asked_for_again_while_it_ran_writes_nothing(small_run: dict[str, Path], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Left running by a Snakemake killed alone, an evaluation whose output was asked for again (with, say, another
    max_new_tokens) wrote its predictions minutes later, and the next run took them for the newer job's."""
    write_jsonl(tmp_path / "test.jsonl", list(read_jsonl(small_run["test"]))[:4])
    original = predict.corpus_scores

    def scored_then_asked_again(*args: object) -> dict:
        asked = subprocess.run([sys.executable, "-c", "from glmtune.train.holder import hold\n"
                                f"with hold({str(tmp_path / 'eval')!r}, 'an evaluation'): pass"],
                               capture_output=True, text=True, env=dict(os.environ))
        assert asked.returncode != 0 and "is held by an evaluation that is still running" in asked.stderr
        return original(*args)

    monkeypatch.setattr(predict, "corpus_scores", scored_then_asked_again)
    with pytest.raises(Superseded, match="was refused while this one ran"):
        _evaluate(small_run, tmp_path)
    assert not (tmp_path / "eval" / "predictions.jsonl").exists() and not (tmp_path / "eval" / "scores.json").exists()
    monkeypatch.setattr(predict, "corpus_scores", original)
    assert _evaluate(small_run, tmp_path)["num_samples"] == 4  # the refusal was before this job: it writes
    assert len(list(read_jsonl(tmp_path / "eval" / "predictions.jsonl"))) == 4


def test_empty_predictions_are_warned_of(small_run: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """They scored 0 and were said only at INFO, even all of them (h20)."""
    import logging

    write_jsonl(tmp_path / "test.jsonl", list(read_jsonl(small_run["test"]))[:4])
    original = predict.in_order
    monkeypatch.setattr(predict, "in_order", lambda outputs, count: ["", " \n", *original(outputs, count)[2:]])
    with caplog.at_level(logging.WARNING, logger="glmtune.evaluate.predict"):
        scores = _evaluate(small_run, tmp_path)
    assert scores["num_empty_predictions"] == 2
    assert "2 of 4 predictions are empty" in caplog.text
