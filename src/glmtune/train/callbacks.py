"""What a training run shows while it runs: the jsonl rows, the log lines, and the experiment trackers.

Rank 0 writes; nothing here touches the model, the data order or the RNG, so what is trained stays the same.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

log = logging.getLogger("glmtune.train.trainer")  # the training job's log file (logs/train.log) shows these lines
# train.report_to value -> the module it needs (pip install <name> installs it)


class JsonlLogger(TrainerCallback):
    """Writes every logged step (loss, lr, grad norm, real tokens/s, elapsed seconds) as a JSON line, and the
    same as a log line with the ETA; a validation row (eval_loss) gets its own line."""

    def __init__(self, path: Path, collator: Any, earlier_rows: list[dict[str, Any]] = ()) -> None:
        """`earlier_rows`: the run's rows up to the checkpoint resumed from; their elapsed_s (training seconds) counts
        in this job's, so the last row's is the training time of the whole run."""
        self.path, self.collator = path, collator
        self.elapsed_before = max((row.get("elapsed_s", 0.0) for row in earlier_rows), default=0.0)
        # The training seconds of the run: its last training row's elapsed_s.
        self.train_seconds = max((row.get("elapsed_s", 0.0) for row in earlier_rows if "loss" in row), default=0.0)
        self.start = self.last_time = time.time()
        self.last_tokens = 0
        self.first_step: int | None = None  # a resumed run's mean step time counts only its own steps
        # (step, elapsed) of this process's first logged step: later ETAs leave out the steps before it, whose time
        # holds the one-off compilation (flex attention, ~40 s on GLM-4-9B) and first-shape costs
        self.first_logged: tuple[int, float] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.first_step, self.start, self.first_logged = state.global_step, time.time(), None
        # The first row's rate counts from here: building the Trainer and loading a checkpoint took time before it.
        self.last_time, self.last_tokens = self.start, self.collator.real_tokens * args.world_size

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """The last step is logged too (the Trainer logs every logging_steps-th only): its row holds the mean loss
        of the steps since the last row, so the log, the plot, the final loss and train_seconds reach the run's end,
        also where max_steps < logging_steps. So is a step that saves a checkpoint (the Trainer's flow callback, first,
        has decided): a run resumed from it then logs as an uninterrupted one, where a save_steps that is no multiple
        of logging_steps had left the steps before it out of the resumed run's rows and mean loss. Every rank sets it
        (logging gathers the loss across ranks)."""
        if state.global_step >= state.max_steps or control.should_save:
            control.should_log = True

    def finish(self, summary: dict[str, Any]) -> None:
        """The last row: the run's summary as train_summary.json has it (the Trainer's own last row has its mean
        loss over this job's steps only, and this job's time)."""
        keys = ("train_loss", "validation_loss", "train_seconds", "reused", "resumed_from", "peak_gpu_memory_gb")
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"step": summary["steps"], **{k: summary[k] for k in keys if k in summary}}) + "\n")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not (state.is_world_process_zero and logs) or "train_runtime" in logs:  # that row: see finish
            return
        # Every rank collates the same amount on average: this rank's count times the world size.
        now, tokens = time.time(), self.collator.real_tokens * args.world_size
        row = {"step": state.global_step, **logs}
        if "loss" in logs and now > self.last_time:
            row["tokens"] = tokens - self.last_tokens  # since the last row: the run's figure is their sum over time
            row["tokens_per_second"] = round(row["tokens"] / (now - self.last_time), 1)
            self.last_time, self.last_tokens = now, tokens
        row["elapsed_s"] = round(now - self.start + self.elapsed_before, 2)
        if "eval_runtime" in logs:  # the next tokens/s is of training alone
            self.last_time += logs["eval_runtime"]
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")
        if "loss" in row:
            self.train_seconds = row["elapsed_s"]
        if "loss" in row or "eval_loss" in row:
            log.info("%s", self.line(row, state.max_steps))
        if "loss" in row and self.first_logged is None:
            self.first_logged = (row["step"], row["elapsed_s"])

    def eta_s(self, step: int, max_steps: int, elapsed: float) -> float | None:
        """Seconds left at the mean time per step so far (None before the first step of this process); after the
        first logged step, the mean of the steps since then (compilation stays out of the estimate)."""
        if self.first_logged is not None and step > self.first_logged[0]:
            first_step, first_elapsed = self.first_logged
            return (max_steps - step) * (elapsed - first_elapsed) / (step - first_step)
        done = step - (self.first_step or 0)
        return (max_steps - step) * (elapsed - self.elapsed_before) / done if done > 0 else None

    def line(self, row: dict[str, Any], max_steps: int, earlier: bool = False) -> str:
        """The log line of a row; `earlier`: a row of the run's earlier jobs (no ETA)."""
        step, elapsed = row["step"], row.get("elapsed_s", 0.0)
        if "eval_loss" in row:
            return f"step {step}/{max_steps} validation loss {row['eval_loss']:.4f}"
        eta = None if earlier else self.eta_s(step, max_steps, elapsed)
        parts = [f"step {step}/{max_steps}", f"loss {row['loss']:.4f}", f"lr {row.get('learning_rate', float('nan')):.3g}",
                 f"grad norm {row.get('grad_norm', float('nan')):.3g}", f"{row.get('tokens_per_second', 0):.0f} tokens/s",
                 f"elapsed {clock(elapsed)}", f"ETA {clock(eta) if eta is not None else '?'}"]
        return " | ".join(parts)


class StepsFromConfig(TrainerCallback):
    """The run's logging, eval and save steps are the config's, also after a resume. The Trainer replaces its state
    with the checkpoint's, whose step settings its flow then follows (only a warning says so): a train.eval_steps
    changed before re-running a killed run (it keeps the run id, glmtune.train.run_id) would validate at the
    checkpoint's cadence, or every 500 steps where the checkpoint's run had none."""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for kind in ("logging", "eval", "save"):
            wanted, had = getattr(args, f"{kind}_steps"), getattr(state, f"{kind}_steps", None)
            if wanted is not None and wanted != had:
                if state.global_step:
                    log.info("train.%s_steps %s (the checkpoint's run had %s)", kind, wanted, had)
                setattr(state, f"{kind}_steps", wanted)


def clock(seconds: float) -> str:
    """h:mm:ss"""
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def eval_args(eval_steps: int | None, has_validation: bool, strategy_arg: str) -> dict[str, Any]:
    """TrainingArguments for train.eval_steps: evaluate every N steps, or never during training (the final
    validation loss is computed after training either way)."""
    if eval_steps and has_validation:
        return {strategy_arg: "steps", "eval_steps": eval_steps}
    return {strategy_arg: "no"}


def report_args(report_to: list[str], run_id: str, results: Path) -> dict[str, Any]:
    """TrainingArguments for train.report_to. Trackers run offline unless the user's environment says otherwise;
    TensorBoard writes under the checkpoint folder (the Trainer's default: <output_dir>/runs)."""
    if report_to:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("SWANLAB_MODE", "offline")
        os.environ.setdefault("MLFLOW_TRACKING_URI", (results / "mlruns").resolve().as_uri())
    return {"report_to": list(report_to), "run_name": run_id}
