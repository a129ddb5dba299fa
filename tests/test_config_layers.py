"""glmtune.config_layers without Snakemake: which config a job runs on, and --config strings read as the schema wants."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from glmtune.config_layers import (LayerError, job_command, layer_config, parse_overrides, profile_words,
                                   replaced_limits, sort_order_free, whole_numbers, written_by_user)

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text(encoding="utf-8"))
DEMO: dict[str, Any] = {"datasets": {"demo": {"source": "demo"}}, "model": {"name": "tiny", "source": "tiny"},
                        "train": {"max_steps": 500, "lora": {"r": 16}}, "runs": {"x": {}}}
OWN = {"datasets": {"mine": {"source": "path"}}, "model": {"name": "m", "source": "path"}}
PRESET = {"train": {"lora": {"r": 8}}}


def test_a_file_naming_datasets_or_model_is_a_job_of_its_own() -> None:
    assert layer_config(DEMO, [OWN, PRESET], {}, SCHEMA) == {**OWN, "train": {"lora": {"r": 8}}}
    only_model = layer_config(DEMO, [{"model": OWN["model"], "datasets": OWN["datasets"]}], {}, SCHEMA)
    assert "train" not in only_model and "runs" not in only_model


def test_presets_alone_layer_over_the_embedded_default() -> None:
    layered = layer_config(DEMO, [PRESET, {"runs": {"y": {}}}], {}, SCHEMA)
    assert layered["train"] == {"max_steps": 500, "lora": {"r": 8}} and layered["runs"] == {"y": {}}
    assert layered["datasets"] == DEMO["datasets"]


def test_files_naming_runs_replace_the_defaults_runs_and_merge_with_each_other() -> None:
    """As in a job of your own: the second file's runs had replaced the first's (only over the default job)."""
    over_default = layer_config(DEMO, [{"runs": {"a": {}}}, {"runs": {"b": {}}}], {}, SCHEMA)
    own = layer_config(DEMO, [OWN, {"runs": {"a": {}}}, {"runs": {"b": {}}}], {}, SCHEMA)
    assert over_default["runs"] == own["runs"] == {"a": {}, "b": {}}


def test_config_values_apply_last_typed() -> None:
    layered = layer_config(DEMO, [OWN], {"train": {"max_steps": "5", "lora": {"r": "4"}}}, SCHEMA)
    assert layered["train"] == {"max_steps": 5, "lora": {"r": 4}}


@pytest.mark.parametrize(("given", "expected"), [
    ({"train": {"learning_rate": "1e-4", "packing": "true", "deepspeed": "null"}},
     {"train": {"learning_rate": 1e-4, "packing": True, "deepspeed": None}}),
    ({"evaluate": {"batch_size": "auto", "max_samples": "null"}}, {"evaluate": {"batch_size": "auto", "max_samples": None}}),
    ({"model": {"name": "123", "revision": "0042"}}, {"model": {"name": "123", "revision": "0042"}}),  # strings stay
    ({"train": {"lora": {"target_modules": ["q_proj", "v_proj"]}}}, {"train": {"lora": {"target_modules": ["q_proj", "v_proj"]}}}),
    ({"runs": {"a": {"train": {"max_steps": "7"}}}}, {"runs": {"a": {"train": {"max_steps": 7}}}}),
    ({"grid": {"train.learning_rate": ["1e-3", "3.0e-3"]}}, {"grid": {"train.learning_rate": [1e-3, 3e-3]}}),
    ({"train": {"max_steps": "five"}}, {"train": {"max_steps": "five"}}),  # left to the schema check, which names it
])
def test_nested_strings_are_read_as_the_schema_wants(given: dict, expected: dict) -> None:
    assert parse_overrides(given, SCHEMA) == expected


def test_no_datasets_stops() -> None:
    with pytest.raises(LayerError, match="datasets: no datasets"):
        layer_config(DEMO, [{"datasets": {}}], {}, SCHEMA)
    with pytest.raises(LayerError, match="a --configfile that names `datasets` or `model` is a job of your own, which "
                                         "starts from no datasets"):
        layer_config(DEMO, [{"model": OWN["model"]}], {}, SCHEMA)


def test_a_job_command_puts_the_targets_before_the_files_and_values_that_take_every_word(tmp_path: Path) -> None:
    """Parsed back by Snakemake's own parser: the same targets, config files and --config values."""
    from snakemake.cli import get_argument_parser

    inside, outside = tmp_path / "config" / "my job.yaml", Path("/elsewhere/site.yaml")
    command = job_command(["results/runs/a/adapter", "results/eval/metrics.md"], [inside, outside],
                          ["train={max_steps: 3}"], cwd=tmp_path)
    assert command.startswith("snakemake --cores 8 results/runs/a/adapter results/eval/metrics.md --configfile ")
    args = get_argument_parser().parse_args(shlex.split(command)[1:])
    assert args.targets == ["results/runs/a/adapter", "results/eval/metrics.md"]
    assert [str(p) for p in args.configfile] == ["config/my job.yaml", "/elsewhere/site.yaml"]
    assert args.config == ["train={max_steps: 3}"]
    assert job_command(["results/merged_model"], []) == "snakemake --cores 8 results/merged_model"
    # a job folder of its own: the checkout's Snakefile and default profile, as the README runs such a job
    checkout = tmp_path / "glmtune"
    (checkout / "workflow").mkdir(parents=True)
    (checkout / "profiles" / "default").mkdir(parents=True)
    (checkout / "workflow" / "Snakefile").write_text("")
    assert job_command(["results/merged_model"], [], cwd=tmp_path, snakefile=checkout / "workflow" / "Snakefile") == (
        f"snakemake -s {checkout}/workflow/Snakefile --workflow-profile {checkout}/profiles/default --cores 8 "
        "results/merged_model")
    assert job_command(["x"], [], cwd=checkout, snakefile=checkout / "workflow" / "Snakefile") == "snakemake --cores 8 x"


def test_a_leading_tilde_in_a_local_path_is_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a shell reads it, wherever a local path is given (a --configfile, --config); a name inside a download
    (source: url) is left as written."""
    monkeypatch.setenv("HOME", str(tmp_path))
    user = {"datasets": {"mine": {"source": "path", "files": {"train": "~/data/train.json", "test": "/abs/dev.json"}},
                         "lf": {"source": "llamafactory", "dataset_info": "~/LLaMA-Factory/data/dataset_info.json"},
                         "web": {"source": "url", "url": "https://example.org/a.tar.gz", "files": {"all": "~odd/a.json"}}},
            "model": {"name": "m", "source": "path", "path": "~/models/glm"},
            "runs": {"a": {}, "b": {"train": {"deepspeed": "~/ds.json"}}}}
    config = layer_config(DEMO, [user], {"train": {"deepspeed": "~/ds2.json"}}, SCHEMA)  # --config train=...
    datasets = config["datasets"]
    assert datasets["mine"]["files"] == {"train": f"{tmp_path}/data/train.json", "test": "/abs/dev.json"}
    assert datasets["lf"]["dataset_info"] == f"{tmp_path}/LLaMA-Factory/data/dataset_info.json"
    assert datasets["web"]["files"] == {"all": "~odd/a.json"}  # a name inside the download, not a path here
    assert config["model"]["path"] == f"{tmp_path}/models/glm"
    assert (config["train"]["deepspeed"], config["runs"]["b"]["train"]["deepspeed"]) == (f"{tmp_path}/ds2.json",
                                                                                         f"{tmp_path}/ds.json")


def test_order_free_sections_are_sorted_and_ordered_ones_kept() -> None:
    config: dict[str, Any] = {
        "datasets": {"b": {"clean": {"replace": {"{{z}}": "1", "{{a}}": "2"}, "max_chars": 9}},
                     "a": {"files": {"train": ["t-00001-of-00002.parquet", "t-00000-of-00002.parquet"], "test": "d.json"}}},
        "runs": {"z": {}, "a": {}}, "train": {"seed": 1, "lora": {"r": 8, "alpha": 16}},
        **{section: {"y": 1, "x": 2} for section in ("tokenize", "evaluate", "export", "split", "model")},
    }
    sort_order_free(config)
    assert list(config["train"]) == ["lora", "seed"] and list(config["train"]["lora"]) == ["alpha", "r"]
    assert all(list(config[section]) == ["x", "y"] for section in ("tokenize", "evaluate", "export", "split", "model"))
    clean = config["datasets"]["b"]["clean"]
    assert list(clean) == ["max_chars", "replace"] and list(clean["replace"]) == ["{{z}}", "{{a}}"]  # applied in order
    assert list(config["datasets"]) == ["b", "a"] and list(config["runs"]) == ["z", "a"]  # merged / exported in order
    # a list of files is read in one order, however written
    assert config["datasets"]["a"]["files"] == {"train": ["t-00000-of-00002.parquet", "t-00001-of-00002.parquet"],
                                                "test": "d.json"}


def test_a_list_of_files_keeps_its_order_however_a_path_is_spelled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The files' order decides the split: written as typed, an absolute path sorted after "../data/b.json" and the
    same two files gave another validation set (1 record of 20 in common)."""
    job = tmp_path / "job"
    job.mkdir()
    monkeypatch.chdir(job)
    spellings = [["../data/a.json", "../data/b.json"], [f"{tmp_path}/data/a.json", "../data/b.json"],
                 ["../data/b.json", "../job/../data/a.json"]]
    orders = []
    for files in spellings:
        config: dict[str, Any] = {"datasets": {"d": {"files": {"all": files}}},
                                  **{section: {} for section in ("train", "tokenize", "evaluate", "export", "split", "model")}}
        sort_order_free(config)
        orders.append([Path(os.path.abspath(path)).name for path in config["datasets"]["d"]["files"]["all"]])
    assert orders == [["a.json", "b.json"]] * 3


def test_whole_number_floats_become_ints_where_the_schema_wants_an_integer_and_stay_floats_elsewhere() -> None:
    """YAML reads `cutoff_len: 2048.0` as a float, which JSON Schema accepts as an integer; the tokenize job then
    failed on a float slice bound."""
    config = {"tokenize": {"cutoff_len": 2048.0, "max_truncated_ratio": 1.0},
              "train": {"batch_size": 8.0, "num_epochs": 2.0, "learning_rate": 1.0, "lora": {"r": 16.0, "alpha": 32.0}},
              "evaluate": {"batch_size": 64.0, "max_new_tokens": 1.0e3},
              "runs": {"b": {"train": {"max_steps": 5.0}}}, "grid": {"train.lora.r": [8.0, 2.5]}}
    fixed = whole_numbers(config, SCHEMA)
    assert fixed == config  # equal values: only the types change
    kinds = {key: type(value) for key, value in [
        ("cutoff_len", fixed["tokenize"]["cutoff_len"]), ("max_truncated_ratio", fixed["tokenize"]["max_truncated_ratio"]),
        ("batch_size", fixed["train"]["batch_size"]), ("num_epochs", fixed["train"]["num_epochs"]),
        ("learning_rate", fixed["train"]["learning_rate"]), ("r", fixed["train"]["lora"]["r"]),
        ("alpha", fixed["train"]["lora"]["alpha"]), ("evaluate.batch_size", fixed["evaluate"]["batch_size"]),
        ("max_new_tokens", fixed["evaluate"]["max_new_tokens"]), ("run max_steps", fixed["runs"]["b"]["train"]["max_steps"]),
        ("grid r", fixed["grid"]["train.lora.r"][0]), ("grid r 2.5", fixed["grid"]["train.lora.r"][1])]}
    assert kinds == {"cutoff_len": int, "max_truncated_ratio": float, "batch_size": int, "num_epochs": float,
                     "learning_rate": float, "r": int, "alpha": float, "evaluate.batch_size": int, "max_new_tokens": int,
                     "run max_steps": int, "grid r": int, "grid r 2.5": float}  # 2.5 is left for the schema to refuse


def warnings_for(default: dict[str, Any], files: list[dict[str, Any]], overrides: dict[str, Any] | None = None) -> list[str]:
    layered = layer_config(default, files, overrides or {}, SCHEMA)
    return replaced_limits(layered, written_by_user(files, overrides or {}, SCHEMA))


def test_a_cutoff_len_replacing_demo_limits_the_user_wrote_too_is_warned_of() -> None:
    """The validated config has both limits filled by the schema, so a written max_input_length: 10 beside
    cutoff_len: 60 went unread without a word (h15); limits only the default file writes are not the user's."""
    both = {**OWN, "tokenize": {"cutoff_len": 60, "max_input_length": 10}}
    assert warnings_for(DEMO, [both]) == [
        "tokenize.cutoff_len 60 replaces the max_input_length also written: a training sample keeps its first 60 "
        "tokens and an evaluation prompt its first 60; remove max_input_length, or write cutoff_len: null to use them"]
    demo_limits = {**DEMO, "tokenize": {"max_input_length": 64, "max_output_length": 128}}
    assert warnings_for(demo_limits, [], {"tokenize": {"cutoff_len": "256"}}) == []
    assert warnings_for(demo_limits, [{"tokenize": {"max_output_length": 300}}], {"tokenize": {"cutoff_len": "256"}})[0] \
        .startswith("tokenize.cutoff_len 256 replaces the max_output_length also written")
    run_own = {**OWN, "tokenize": {"max_input_length": 10}, "runs": {"long": {"tokenize": {"cutoff_len": 2048}}, "short": {}}}
    assert [line.split(":")[0] for line in warnings_for(DEMO, [run_own])] == ["runs.long.tokenize.cutoff_len 2048 replaces the max_input_length also written"]
    assert warnings_for(DEMO, [{**OWN, "tokenize": {"max_input_length": 10}}]) == []
    grid = {**OWN, "tokenize": {"max_input_length": 10}, "grid": {"tokenize.cutoff_len": [256, 512]}}
    assert [line.split(":")[0] for line in warnings_for(DEMO, [grid])] == [
        "grid.tokenize.cutoff_len 256, 512 replaces the max_input_length also written"]



def test_a_suggested_command_keeps_the_command_lines_profiles() -> None:
    """A SLURM user's suggested command named profiles/default: typed as given, its jobs ran on the login node."""
    argv = ["snakemake", "--report", "r.html", "--profile", "profiles/slurm", "--workflow-profile=mine", "--cores", "2"]
    assert profile_words(argv) == ["--profile", "profiles/slurm", "--workflow-profile", "mine"]
    snakefile = REPO / "workflow" / "Snakefile"
    words = shlex.split(job_command(["t"], [], (), cwd="/", snakefile=snakefile, profiles=profile_words(argv)))
    assert words == ["snakemake", "-s", str(snakefile), "--profile", "profiles/slurm", "--workflow-profile", "mine",
                     "--cores", "8", "t"]
