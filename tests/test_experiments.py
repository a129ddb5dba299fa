"""Named runs (glmtune.experiments), the test split that no training record changes, and the comparison of runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from glmtune.data.split import merge_and_split, write_given_test
from glmtune.evaluate.compare import compare_runs
from glmtune.experiments import (RunError, expand_grid, export_run, run_overrides, run_settings, shared_trainings,
                                 tokenized_name, tokenized_sets)
from glmtune.io import write_jsonl

from conftest import REPO
from helpers.settings import converted_part, section, split_settings

SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text(encoding="utf-8"))
BASE = {  # as the workflow's validated config: the schema's defaults filled in
    "train": section("train", {"method": "lora", "learning_rate": 3e-3, "lora": {"r": 16, "target_modules": ["all"]}}),
    "tokenize": section("tokenize", {"max_input_length": 64, "max_output_length": 128, "cutoff_len": None}),
    "evaluate": section("evaluate", {"max_samples": 200, "batch_size": 32, "max_new_tokens": 96, "cache": "dynamic"}),
}


def test_a_grid_expands_into_every_combination_named_by_its_values() -> None:
    runs = expand_grid({"train.learning_rate": [1e-3, 3e-3], "train.lora.r": [8, 64]})
    assert list(runs) == ["learning_rate0.001_r8", "learning_rate0.001_r64", "learning_rate0.003_r8", "learning_rate0.003_r64"]
    assert runs["learning_rate0.003_r64"] == {"train": {"learning_rate": 3e-3, "lora": {"r": 64}}}
    assert expand_grid({}) == {}
    with pytest.raises(RunError, match="grid.model.name"):
        expand_grid({"model.name": ["a"]})


def test_grid_values_that_print_alike_are_two_runs_or_refused() -> None:
    """1.0000001e-3 was named learning_rate0.001 like 1e-3, and one run replaced the other without a word."""
    assert list(expand_grid({"train.learning_rate": [1e-3, 1.0000001e-3]})) == [
        "learning_rate0.001", "learning_rate0.0010000001"]
    with pytest.raises(RunError, match=r"grid: two combinations are both named report_toa-b"):
        expand_grid({"train.report_to": ["a b", "a-b"]})
    # keys with the same last part name their sections
    assert list(expand_grid({"train.batch_size": [4], "evaluate.batch_size": [8]})) == [
        "train-batch_size4_evaluate-batch_size8"]


def test_runs_merge_into_the_config_and_keep_its_other_settings() -> None:
    runs = run_settings({**BASE, "runs": {"a": {}, "b": {"train": {"lora": {"r": 4}}}}, "grid": {}}, SCHEMA)
    assert runs["a"] == {**BASE, "train": {**BASE["train"], "ptuning": None, "pack_length": None}}  # not read by LoRA
    assert runs["b"]["train"]["lora"] == {**BASE["train"]["lora"], "r": 4}
    assert runs["b"]["tokenize"] == BASE["tokenize"] and BASE["train"]["lora"]["r"] == 16  # the config is not changed


@pytest.mark.parametrize(("runs", "message"), [
    ({"../x": {}}, "runs.../x: a run name is a folder name"),
    ({".hidden": {}}, "runs..hidden: a run name is a folder name"),
    ({"base": {}}, "not base"),
    ({"a": {"model": {"name": "x"}}}, "runs.a.model: unknown key; a run overrides only train, tokenize, evaluate"),
    ({"a": {"train": {"lora": {"rr": 4}}}}, "runs.a.train.lora.rr: unknown key; did you mean 'train.lora.r'?"),
    ({"a": {"train": {"method": "qlorra"}}}, "runs.a.train.method: 'qlorra' is not allowed"),
    ({}, "runs: no runs"),
])
def test_a_bad_run_is_named_with_its_key(runs: dict, message: str) -> None:
    with pytest.raises(RunError) as err:
        run_settings({**BASE, "runs": runs, "grid": {}}, SCHEMA)
    assert message in str(err.value)


def test_a_grid_run_may_not_take_a_listed_runs_name() -> None:
    with pytest.raises(RunError, match="grid: its run r8 is also named under runs"):
        run_overrides({"runs": {"r8": {}}, "grid": {"train.lora.r": [8]}})


def test_runs_with_the_same_settings_are_refused_naming_both() -> None:
    # the grid's r16 is the config's own rank: the default run main would be trained twice
    with pytest.raises(RunError, match=r"runs main and r16 have the same train, tokenize and evaluate settings"):
        run_settings({**BASE, "runs": {"main": {}}, "grid": {"train.lora.r": [4, 16]}}, SCHEMA)
    with pytest.raises(RunError, match="runs a and b have the same"):
        run_settings({**BASE, "runs": {"a": {"train": {"lora": {"r": 4}}}, "b": {"train": {"lora": {"r": 4}}}},
                      "grid": {}}, SCHEMA)
    grid_alone = run_settings({**BASE, "runs": {}, "grid": {"train.lora.r": [4, 16]}}, SCHEMA)
    assert list(grid_alone) == ["r4", "r16"]
    evaluated_apart = run_settings({**BASE, "runs": {"a": {}, "b": {"evaluate": {"max_new_tokens": 32}}}, "grid": {}},
                                   SCHEMA)
    assert list(evaluated_apart) == ["a", "b"]
    # ... which train one model: b evaluates a's
    assert shared_trainings(evaluated_apart) == {"a": "a", "b": "a"}
    apart = run_settings({**BASE, "runs": {"a": {}, "b": {"evaluate": {"max_new_tokens": 32}},
                                           "c": {"train": {"lora": {"r": 4}}, "evaluate": {"max_new_tokens": 32}},
                                           "d": {"tokenize": {"cutoff_len": 300}}}, "grid": {}}, SCHEMA)
    assert shared_trainings(apart) == {"a": "a", "b": "a", "c": "c", "d": "d"}


def test_settings_a_run_does_not_read_are_null_so_they_neither_retrain_nor_tell_runs_apart() -> None:
    runs = run_settings({**BASE, "runs": {"lora": {}, "pt": {"train": {"method": "ptuning"}},
                                          "full": {"train": {"method": "full", "max_steps": 5, "packing": True}},
                                          "cut": {"tokenize": {"cutoff_len": 300}}}, "grid": {}}, SCHEMA)
    lora, ptuning, full = runs["lora"]["train"], runs["pt"]["train"], runs["full"]["train"]
    assert lora["ptuning"] is None and lora["lora"] == BASE["train"]["lora"] and lora["pack_length"] is None
    assert ptuning["lora"] is None and ptuning["ptuning"] == BASE["train"]["ptuning"]
    assert full["lora"] is None and full["ptuning"] is None and full["num_epochs"] is None
    assert full["pack_length"] == BASE["train"]["pack_length"]  # packing reads it
    assert lora["num_epochs"] == BASE["train"]["num_epochs"]  # no max_steps: the epochs set the steps
    assert runs["cut"]["tokenize"] == {**BASE["tokenize"], "cutoff_len": 300, "max_input_length": None,
                                       "max_output_length": None}
    # a grid of methods by LoRA rank: the P-Tuning v2 runs differ in a setting they never read
    with pytest.raises(RunError, match=r"runs methodptuning_r4 and methodptuning_r8 have the same .* twice: they "
                                       r"differ only in train.lora.r, settings that neither run reads \(train.method "
                                       r"ptuning\). Leave one out$"):
        run_settings({**BASE, "runs": {}, "grid": {"train.method": ["lora", "ptuning"], "train.lora.r": [4, 8]}},
                     SCHEMA)
    # runs that differ in a demo limit their cutoff_len replaces: named as that, not as the method (h16)
    with pytest.raises(RunError, match=r"differ only in tokenize.max_input_length, settings that neither run reads "
                                       r"\(tokenize.cutoff_len 300, which replaces the demos' limits\)"):
        run_settings({**BASE, "runs": {"a": {"tokenize": {"cutoff_len": 300, "max_input_length": 64}},
                                       "b": {"tokenize": {"cutoff_len": 300, "max_input_length": 96}}}, "grid": {}}, SCHEMA)


def test_equal_tokenize_settings_share_one_tokenized_set() -> None:
    longer = {**BASE["tokenize"], "max_output_length": 256}
    assert tokenized_name(longer) == tokenized_name(dict(longer)) != tokenized_name({**longer, "cutoff_len": 100})
    config = {**BASE, "runs": {"main": {}, "long": {"tokenize": {"max_output_length": 256}},
                               "long_lr": {"tokenize": {"max_output_length": 256}, "train": {"learning_rate": 1.0e-3}}}}
    sets = tokenized_sets(config, run_settings(config, SCHEMA))
    assert sets == {"main": "default", "long": tokenized_name(run_settings(config, SCHEMA)["long"]["tokenize"]),
                    "long_lr": sets["long"]}


def test_a_runs_tokenized_set_follows_its_own_settings_not_the_configs() -> None:
    """Editing the config's tokenize section moves only the runs that read it: a run with settings of its own keeps
    its set (its name was `default` while they equalled the config's, so the edit moved it and re-trained it)."""
    runs = {"p": {"tokenize": {"max_input_length": 64}}, "q": {"tokenize": {"max_input_length": 48}},
            "r": {"train": {"learning_rate": 1.0e-3}}}
    before = {**BASE, "tokenize": {**BASE["tokenize"], "max_input_length": 64}, "runs": runs}
    after = {**BASE, "tokenize": {**BASE["tokenize"], "max_input_length": 48}, "runs": runs}
    sets_before = tokenized_sets(before, run_settings(before, SCHEMA))
    sets_after = tokenized_sets(after, run_settings(after, SCHEMA))
    assert sets_before["p"] == sets_after["p"] and sets_before["q"] == sets_after["q"]
    assert sets_before["r"] == sets_after["r"] == "default"  # r reads the config's: its set is rebuilt, as it should


def test_the_exported_run_is_named_or_the_first() -> None:
    runs = {"a": {}, "b": {}}
    assert export_run({"export": {"run": None}}, runs) == "a" and export_run({"export": {"run": "b"}}, runs) == "b"
    with pytest.raises(RunError, match="export.run: c is not a run; runs are: a, b"):
        export_run({"export": {"run": "c"}}, runs)


def conversations(prefix: str, count: int) -> list[dict]:
    return [{"conversations": [{"role": "user", "content": f"{prefix}{i}"}, {"role": "assistant", "content": "ok"}]}
            for i in range(count)]


def test_a_given_test_split_does_not_change_when_a_training_record_does(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "test.jsonl", conversations("test", 30))
    parts = [converted_part("d", "all", str(tmp_path / "all.jsonl")), converted_part("d", "test", str(tmp_path / "test.jsonl"))]
    written = {}
    for edit in (0, 1):  # the second time one more training record, and one edited
        rows = conversations("train", 100 + edit)
        rows[3]["conversations"][1]["content"] = "edited" if edit else "ok"
        write_jsonl(tmp_path / "all.jsonl", rows)
        merge_and_split(parts, tmp_path / f"out{edit}", split_settings(validation_ratio=0.1, test_ratio=0.1, seed=42), write_test=True)
        written[edit] = {name: (tmp_path / f"out{edit}/{name}.jsonl").read_bytes() for name in ("train", "test")}
    assert written[0]["train"] != written[1]["train"]
    assert written[0]["test"] == written[1]["test"]
    assert sorted(written[0]["test"].splitlines()) != written[0]["test"].splitlines()  # shuffled all the same
    # split_test's own file is the same as merge_splits writes, and merge_splits may leave it out.
    write_given_test(parts, tmp_path / "alone.jsonl", seed=42)
    assert (tmp_path / "alone.jsonl").read_bytes() == written[1]["test"]
    merge_and_split(parts, tmp_path / "no_test", split_settings(validation_ratio=0.1, test_ratio=0.1, seed=42), write_test=False)
    assert not (tmp_path / "no_test/test.jsonl").exists() and (tmp_path / "no_test/train.jsonl").is_file()


def write_run(folder: Path, scores: dict, losses: list[float], summary: dict, max_rss: str) -> dict[str, str]:
    folder.mkdir(parents=True)
    (folder / "scores.json").write_text(json.dumps(scores))
    rows = [{"step": 10 * (i + 1), "loss": loss, "tokens_per_second": 100.0 * (i + 1)} for i, loss in enumerate(losses)]
    write_jsonl(folder / "log.jsonl", rows + [{"step": 10 * len(losses), "eval_loss": 1.5}])
    (folder / "train_summary.json").write_text(json.dumps(summary))
    (folder / "train.tsv").write_text("s\th:m:s\tmax_rss\tmax_vms\n75.4\t0:01:15\t" + max_rss + "\t900\n")
    return {"method": "lora", "scores": str(folder / "scores.json"), "log": str(folder / "log.jsonl"),
            "summary": str(folder / "train_summary.json"), "benchmark": str(folder / "train.tsv")}


def test_the_tables_tokens_per_second_is_the_tokens_over_the_time_they_took(tmp_path: Path) -> None:
    """1,000 tokens in 10 s and 1,000 in 1 s are 182 tokens/s, not the rates' mean of 550 (a log whose rows hold
    no token counts, written before they did, keeps the mean: see the test below)."""
    from glmtune.evaluate.compare import training_record

    run = write_run(tmp_path / "run", {}, [3.0, 2.0], {}, "10")
    write_jsonl(run["log"], [{"step": 10, "loss": 3.0, "tokens": 1000, "tokens_per_second": 100.0},
                             {"step": 20, "loss": 2.0, "tokens": 1000, "tokens_per_second": 1000.0}])
    assert training_record(run["log"], run["summary"], run["benchmark"])["tokens_per_second"] == 181.8


def test_the_comparison_has_one_row_per_model_with_each_runs_training(tmp_path: Path) -> None:
    scores = {"rouge-1": 30.0, "rouge-2": 10.0, "rouge-l": 20.0, "bleu-4": 0.1, "bleu-4-char": 5.0, "num_samples": 4,
              "prompts_cut": 1, "answers_longer_than_max_new_tokens": 2}
    base = tmp_path / "base.json"
    base.write_text(json.dumps({**scores, "rouge-l": 1.0}))
    runs = {
        "cpu": write_run(tmp_path / "cpu", scores, [3.0, 2.0], {"trainable_parameters": 12345, "validation_loss": 1.5}, "2048"),
        "gpu": write_run(tmp_path / "gpu", {**scores, "rouge-l": 25.0}, [2.5], {"trainable_parameters": 7,
                         "validation_loss": 1.25, "peak_gpu_memory_gb": 3.5, "train_seconds": 12.5}, "1024"),
    }
    models = compare_runs(base, runs, tmp_path / "m.json", tmp_path / "m.md", tmp_path / "m.html")
    assert list(json.loads((tmp_path / "m.json").read_text())) == ["base", "cpu", "gpu"]
    assert models["cpu"]["final_train_loss"] == 2.0 and models["cpu"]["tokens_per_second"] == 150.0
    assert models["cpu"]["train_wall_s"] == 75.4 and models["cpu"]["max_rss_mb"] == 2048.0  # no train_seconds: the job's
    assert models["gpu"]["train_wall_s"] == 12.5  # the training's own time, as a resumed or reused row has it
    lines = (tmp_path / "m.md").read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("| model | method | ROUGE-1")
    assert lines[2].startswith("| base |  | 30 | 10 | 1 |") and lines[2].endswith("|  |  |  |  |  |  | 4 |  | 1 | 2 |")
    assert "| cpu | lora | 30 | 10 | 20 | 0.1 | 5 | 2 | 1.5 | 12,345 | 150 | 2.00 GB RSS | 0:01:15 | 4 |" in lines[3]
    assert "| 3.50 GB GPU |" in lines[4]  # a GPU run's peak is the GPU's, not the job's RSS
    assert "<td>gpu</td><td>lora</td><td>30</td><td>10</td><td>25</td>" in (tmp_path / "m.html").read_text()


def test_the_runs_loss_curves_are_drawn_in_one_plot(tmp_path: Path) -> None:
    from glmtune.train.plots import plot_loss_curves

    logs = {}
    for name in ("a", "b"):
        logs[name] = tmp_path / f"{name}.jsonl"
        write_jsonl(logs[name], [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}, {"step": 2, "eval_loss": 1.2}])
    plot_loss_curves(logs, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"



def test_an_evaluation_reads_the_prompts_limit_not_the_answers() -> None:
    """The base model's evaluation re-ran when tokenize.max_output_length (training's answer limit) changed."""
    from glmtune.experiments import evaluation_reads
    from glmtune.settings import TokenizeSettings

    read = evaluation_reads({**BASE["tokenize"], "max_output_length": 100})
    assert read == evaluation_reads(BASE["tokenize"]) and read["max_output_length"] is None
    settings = TokenizeSettings.from_config(read)
    assert settings.prompt_limit == BASE["tokenize"]["max_input_length"]
    from glmtune.config_rules import positions_problem
    assert positions_problem(10_000, settings, 128) is None
    assert "evaluate.max_new_tokens 10000" in (positions_problem(10_000, settings, 10_000) or "")
