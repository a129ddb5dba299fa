"""Several runs in one DAG on a temporary copy of the workflow: what Snakemake's own dry run re-runs after each edit."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from glmtune.data.synthetic import write_advertisegen
from glmtune.io import read_jsonl

from test_workflow import copy_workflow, edit_config, planned_jobs, snakemake

pytestmark = pytest.mark.workflow
TARGET = "results/eval/metrics.md"


def small_job(config: dict) -> None:
    """A few steps on local files, with a model folder of its own (source: path): the tiny model, built from the
    training text, would change with every training record, and the base evaluation rightly with it."""
    config["datasets"] = {"local": {"source": "path", "format": "advertisegen",
                                    "files": {"all": "data/train.json", "test": "data/dev.json"}}}
    config["train"].update(max_steps=4, batch_size=4, logging_steps=2, save_steps=4, eval_steps=None)
    config["evaluate"].update(max_samples=4, batch_size=4, max_new_tokens=8)
    config["runs"] = {"a": {}, "b": {"train": {"lora": {"r": 4}}}}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = copy_workflow(tmp_path_factory.mktemp("experiments"))
    write_advertisegen(workdir / "data", 120, 12, 3)
    edit_config(workdir, small_job)
    snakemake(workdir, "results/tiny_model")
    shutil.copytree(workdir / "results/tiny_model", workdir / "models/tiny")
    shutil.rmtree(workdir / "results")
    edit_config(workdir, lambda c: c["model"].update(source="path", path="models/tiny"))
    snakemake(workdir, TARGET)
    return workdir


@contextmanager
def edited(path: Path, change: Callable[[str], str]) -> Iterator[None]:
    original = path.read_text(encoding="utf-8")
    path.write_text(change(original), encoding="utf-8")
    try:
        yield
    finally:
        path.write_text(original, encoding="utf-8")


def with_config(workdir: Path, change: Callable[[dict], None]):
    def apply(text: str) -> str:
        import yaml

        config = yaml.safe_load(text)
        change(config)
        return yaml.safe_dump(config, allow_unicode=True, sort_keys=False)  # the order as edited

    return edited(workdir / "config/config.yaml", apply)


def test_both_runs_are_trained_once_on_one_tokenized_set_and_compared_with_the_base(two_runs: Path) -> None:
    metrics = json.loads((two_runs / "results/eval/metrics.json").read_text())
    assert list(metrics) == ["base", "a", "b"]
    assert metrics["a"]["trainable_parameters"] == 4 * metrics["b"]["trainable_parameters"]  # LoRA rank 16 vs 4
    assert all(metrics[run]["train_wall_s"] > 0 and metrics[run]["max_rss_mb"] > 0 for run in ("a", "b"))
    assert [p.name for p in (two_runs / "results/tokenized").iterdir()] == ["default"]
    for run in ("a", "b"):
        assert (two_runs / f"results/runs/{run}/adapter/adapter_model.safetensors").is_file()
        assert (two_runs / f"results/runs/{run}/eval/scores.json").is_file()
        assert list((two_runs / f"results/runs/{run}/checkpoints").glob("*/checkpoint-4"))
    table = (two_runs / "results/eval/metrics.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in table[2:]] == ["| base", "| a", "| b"]
    assert (two_runs / "results/eval/loss_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_nothing_changed_nothing_to_do(two_runs: Path) -> None:
    assert planned_jobs(two_runs, TARGET) == []


def test_adding_a_run_trains_only_that_run(two_runs: Path) -> None:
    with with_config(two_runs, lambda c: c["runs"].update(c={"train": {"learning_rate": 1e-3}})):
        assert planned_jobs(two_runs, TARGET) == ["compare_models", "evaluate[run=c]", "train[run=c]"]
    # Other evaluate settings alone: run a's model, trained once, evaluated again
    with with_config(two_runs, lambda c: c["runs"].update(c={"evaluate": {"max_new_tokens": 4}})):
        assert planned_jobs(two_runs, TARGET) == ["compare_models", "evaluate[run=c]"]
    with with_config(two_runs, lambda c: c["runs"].update(c={"tokenize": {"max_output_length": 64}})):
        jobs = planned_jobs(two_runs, TARGET)
        # Other tokenize settings: a tokenized set of its own; a and b keep theirs.
        assert len(jobs) == 4 and jobs[:2] == ["compare_models", "evaluate[run=c]"] and jobs[3] == "train[run=c]"
        assert jobs[2].startswith("tokenize[tokenized=t")


def test_editing_one_runs_settings_reruns_only_that_run(two_runs: Path) -> None:
    with with_config(two_runs, lambda c: c["runs"]["b"]["train"]["lora"].update(r=8)):
        assert planned_jobs(two_runs, TARGET) == ["compare_models", "evaluate[run=b]", "train[run=b]"]
    with with_config(two_runs, lambda c: c["runs"]["b"].update(evaluate={"max_new_tokens": 4})):
        assert planned_jobs(two_runs, TARGET) == ["compare_models", "evaluate[run=b]"]


def test_editing_a_setting_no_run_reads_reordering_keys_or_writing_a_default_out_reruns_nothing(two_runs: Path) -> None:
    # LoRA runs read neither train.ptuning nor pack_length without packing, nor num_epochs under max_steps
    def unread(config: dict) -> None:
        config["train"]["ptuning"] = {"num_virtual_tokens": 16}
        config["train"].update(pack_length=512, num_epochs=3)

    def reordered_with_a_default_written_out(config: dict) -> None:
        config["train"] = {"weight_decay": 0.0, **dict(reversed(config["train"].items()))}  # 0.0: the schema's default
        config["evaluate"] = dict(reversed(config["evaluate"].items()))
        files = config["datasets"]["local"]["files"]  # all, test: merged in that order however written
        config["datasets"]["local"]["files"] = dict(reversed(files.items()))

    for change in (unread, reordered_with_a_default_written_out):
        with with_config(two_runs, change):
            assert planned_jobs(two_runs, TARGET) == [], change.__name__
    with with_config(two_runs, lambda c: c["train"]["lora"].update(dropout=0.05)):  # read by both runs
        assert planned_jobs(two_runs, TARGET) == sorted(
            ["compare_models", "evaluate[run=a]", "evaluate[run=b]", "train[run=a]", "train[run=b]"])


def test_editing_a_training_record_reruns_every_run_but_not_the_base_evaluation(two_runs: Path) -> None:
    record = json.dumps({"content": "类型#裙", "summary": "新的一条。"}, ensure_ascii=False) + "\n"
    with edited(two_runs / "data/train.json", lambda text: text + record):
        assert planned_jobs(two_runs, TARGET) == sorted([
            "convert[dataset=local, part=all]", "merge_splits", "tokenize[tokenized=default]",
            "train[run=a]", "train[run=b]", "evaluate[run=a]", "evaluate[run=b]", "compare_models"])
    # The test file is the base evaluation's input: editing it re-runs it (and, through merge_splits, every run).
    with edited(two_runs / "data/dev.json", lambda text: text + record):
        jobs = planned_jobs(two_runs, TARGET)
        assert {"split_test", "evaluate_base", "train[run=a]", "train[run=b]"} <= set(jobs)
    assert planned_jobs(two_runs, TARGET) == []


def test_every_run_is_exported_and_the_chosen_one_is_the_merged_model(two_runs: Path) -> None:
    with with_config(two_runs, lambda c: c.setdefault("export", {}).update(run="b")):
        jobs = planned_jobs(two_runs, "results/merged_model")
        assert jobs == ["export_chosen", "report_data"]
        out = snakemake(two_runs, "-n", "results/merged_model")
        assert "input: results/runs/b/adapter," in out.stdout
    assert planned_jobs(two_runs, "all_runs_exported") == sorted(
        ["all_runs_exported", "export_model[run=a]", "export_model[run=b]", "report_data"])


def test_a_run_with_other_evaluate_settings_alone_evaluates_the_model_of_the_run_it_shares_a_training_with(
    two_runs: Path,
) -> None:
    with with_config(two_runs, lambda c: c["runs"].update(c={"evaluate": {"max_new_tokens": 4}})):
        out = snakemake(two_runs, TARGET)
        assert "run c: the same train and tokenize settings as run a, so it evaluates run a's model" in out.stderr
        assert not (two_runs / "results/runs/c").joinpath("adapter").exists()
        assert "input: results/runs/a/adapter," in snakemake(two_runs, "-n", "-R", "evaluate", TARGET).stdout
        metrics = json.loads((two_runs / "results/eval/metrics.json").read_text())
        assert metrics["c"]["trained_by"] == "a" and "trained_by" not in metrics["a"]
        assert metrics["c"]["final_train_loss"] == metrics["a"]["final_train_loss"]
        # the same model, greedy, 4 new tokens where a has 8: c's answers are a's cut shorter
        a, c = ([row["prediction"] for row in read_jsonl(two_runs / f"results/runs/{run}/eval/predictions.jsonl")]
                for run in ("a", "c"))
        assert all(len(short) <= len(long) for short, long in zip(c, a)) and c != a
        row = next(line for line in (two_runs / "results/eval/metrics.md").read_text().splitlines() if line.startswith("| c |"))
        assert "(a's training)" in row
        # one export a model: c's would be a's again
        assert planned_jobs(two_runs, "all_runs_exported") == sorted(
            ["all_runs_exported", "export_model[run=a]", "export_model[run=b]", "report_data"])


def test_outputs_an_earlier_config_left_are_named_while_planning(two_runs: Path) -> None:
    """Snakemake never deletes what the current config does not make: a run's own earlier adapter once it shares
    another run's training, a dropped run's folder, the LoRA export once the exported run is P-Tuning v2 all stayed,
    looking current, without a word (h25)."""
    def said(workdir: Path) -> str:
        out = snakemake(workdir, "-n", TARGET)
        return out.stdout + out.stderr
    with with_config(two_runs, lambda c: c["runs"].update(b={"evaluate": {"max_new_tokens": 4}})):
        err = said(two_runs)
        assert ("results/runs/b/adapter is left from an earlier config: run b now uses run a's training, "
                "results/runs/a/adapter" in err)
    with with_config(two_runs, lambda c: c["runs"].pop("b")):
        # other tests of this module may have left a run of their own (c) too
        dropped = re.search(r"results/runs/\{([\w,]+)\}: no such run in this config \(left from an earlier one\)",
                            said(two_runs))
        assert dropped and "b" in dropped.group(1).split(",")
    (two_runs / "results/merged_model").mkdir()
    try:
        with with_config(two_runs, lambda c: c["runs"]["a"].update(train={"method": "ptuning"})):
            err = said(two_runs)
            assert "results/merged_model is an earlier export, not this config's: run a (export.run) now has nothing" in err
        assert "results/merged_model" not in said(two_runs)  # a LoRA run: it is its export
    finally:
        (two_runs / "results/merged_model").rmdir()
    assert "is left from an earlier config" not in said(two_runs)  # the runs a and b of this config: their own
