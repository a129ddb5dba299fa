"""The training log (log.jsonl) across a resume: rows past the checkpoint resumed from are dropped, and the run's mean
loss counts the steps logged before the resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glmtune.io import write_text


def trim_log(path: Path, step: int, max_steps: int) -> None:
    """Keep the training rows up to `step`: a killed run logged steps past its last checkpoint, which the resumed run
    repeats (without this the log has them twice and the loss plot zig-zags). Periodic validation rows up to `step`
    stay (the Trainer evaluates before it saves); the validation at max_steps and the run's summary are written again
    at the end of every run."""
    kept, eval_until = [], step if step < max_steps else step - 1
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            if ("loss" in row and row["step"] <= step) or ("eval_loss" in row and row["step"] <= eval_until):
                kept.append(line + "\n")
        except (json.JSONDecodeError, KeyError):  # the line a kill cut short
            continue
    write_text(path, "".join(kept))


def whole_run_loss(rows: list[dict[str, Any]], resumed_at: int, sum_now: float, steps_now: int) -> float:
    """Mean training loss per step over the whole run, not only the steps since the resume.

    Rows logged up to the checkpoint resumed from count with the steps each covers (a row is the mean since the row
    before); this process's steps with the sum of their losses. A checkpoint's step has its row (JsonlLogger logs
    every step that saves), so no step before the resume is left out.
    """
    total, steps, last = sum_now, steps_now, 0
    for row in rows:
        if "loss" in row and last < row["step"] <= resumed_at:
            total, steps, last = total + row["loss"] * (row["step"] - last), steps + row["step"] - last, row["step"]
    return total / steps if steps else float("nan")
