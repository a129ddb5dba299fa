"""Two gloo processes on a CPU: both ranks train, and the loss curve matches one process on the same global batch;
two evaluating processes write the same predictions as one."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import TRAIN_SETTINGS
from helpers.settings import evaluate_settings, model_settings, tokenize_settings, train_settings

from glmtune.evaluate.predict import evaluate_model
from glmtune.io import read_jsonl
from glmtune.launch import Layout, run_stage
from glmtune.train.trainer import train_model


def test_two_processes_match_one_on_the_same_global_batch(small_run: dict[str, Path], tmp_path: Path) -> None:
    # Sequential sampling makes the global batches identical: rank 0 takes samples 0,2,4,6, rank 1 takes 1,3,5,7.
    settings = {**TRAIN_SETTINGS, "max_steps": 12, "save_steps": 100, "logging_steps": 1, "sampling": "sequential"}
    tok = small_run["tokenized"]

    def arguments(name: str, batch_size: int) -> dict:
        return {"train_dir": str(tok / "train"), "validation_dir": str(tok / "validation"), "model_dir": str(small_run["model"]),
                "adapter_dir": str(tmp_path / name / "adapter"), "log_path": str(tmp_path / name / "log.jsonl"),
                "plot_path": str(tmp_path / name / "loss.png"), "checkpoint_root": str(tmp_path / name / "ckpt"),
                "settings": train_settings(**{**settings, "batch_size": batch_size}), "trust_remote_code": False, "family": "glm4"}

    train_model(**arguments("one", 8))
    run_stage("train", arguments("two", 4), Layout(nodes=1, per_node=2), tmp_path / "two.log")  # typed settings as JSON
    log = (tmp_path / "two.log").read_text()
    assert " -m torch.distributed.run --standalone --nproc_per_node 2 -m glmtune.worker train " in log.splitlines()[0]
    assert log.count("training done") == 1  # only rank 0 logs it (both ranks train: the losses above)
    one = [row["loss"] for row in read_jsonl(tmp_path / "one" / "log.jsonl") if "loss" in row]
    two = [row["loss"] for row in read_jsonl(tmp_path / "two" / "log.jsonl") if "loss" in row]
    assert len(one) == len(two) == 12
    # Same samples, same init; ranks average their own token means, hence a tolerance rather than equality.
    assert all(abs(a - b) < 0.05 * a for a, b in zip(one, two)), (one, two)
    assert two[-1] < two[0] - 0.5
    assert (tmp_path / "two" / "adapter" / "adapter_model.safetensors").is_file()


def test_two_evaluating_processes_write_what_one_process_writes(small_run: dict[str, Path], tmp_path: Path) -> None:
    def arguments(name: str) -> dict:
        return {"model_dir": str(small_run["adapter"]), "test_path": str(small_run["test"]),
                "predictions_path": str(tmp_path / name / "predictions.jsonl"), "scores_path": str(tmp_path / name / "scores.json"),
                "settings": evaluate_settings(max_samples=14, batch_size=4, max_new_tokens=16),
                "model": model_settings(template="glm4"), "tokenize": tokenize_settings(max_input_length=64), "base_model": str(small_run["model"])}

    one = evaluate_model(**arguments("one"))
    run_stage("evaluate", arguments("two"), Layout(nodes=1, per_node=2), tmp_path / "two.log")
    # 14 prompts in 4 batches: rank 0 generated batches 0 and 2, rank 1 batches 1 and 3 (each batch as in one process).
    assert list(read_jsonl(tmp_path / "two" / "predictions.jsonl")) == list(read_jsonl(tmp_path / "one" / "predictions.jsonl"))
    two = json.loads((tmp_path / "two" / "scores.json").read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    assert {k: v for k, v in two.items() if k not in ("samples_per_second", "processes")} == \
        {k: v for k, v in one.items() if k not in ("samples_per_second", "processes")}
