"""The training log's figures against a clock the test sets: what a row's tokens/s and elapsed time count."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from glmtune.io import read_jsonl
from glmtune.train import callbacks
from glmtune.train.callbacks import JsonlLogger


def test_the_first_rows_tokens_per_second_counts_training_time_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The logger is made before the Trainer, which then loads (a resumed run: its checkpoint) for seconds before
    training begins: that time counted in the first row's rate (2007 against 4600 tokens/s after a resume), so the
    comparison's real tokens/s disagreed with its own training time."""
    now = [100.0]
    monkeypatch.setattr(callbacks.time, "time", lambda: now[0])
    collator = SimpleNamespace(real_tokens=0)
    logger = JsonlLogger(tmp_path / "log.jsonl", collator)
    state = SimpleNamespace(global_step=0, is_world_process_zero=True, max_steps=10)
    args = SimpleNamespace(world_size=1)
    now[0] = 105.0  # the Trainer built, a checkpoint loaded
    logger.on_train_begin(args, state, None)
    now[0], collator.real_tokens, state.global_step = 107.0, 1000, 5
    logger.on_log(args, state, None, logs={"loss": 2.0, "learning_rate": 1e-3})
    now[0], collator.real_tokens, state.global_step = 108.0, 1600, 10
    logger.on_log(args, state, None, logs={"loss": 1.5, "learning_rate": 1e-3})
    rows = list(read_jsonl(tmp_path / "log.jsonl"))
    assert [(row["tokens"], row["tokens_per_second"], row["elapsed_s"]) for row in rows] == [(1000, 500.0, 2.0), (600, 600.0, 3.0)]
    assert logger.train_seconds == 3.0
