"""Config errors: one short line per problem, with the key path, the bad value, what is allowed and the closest key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from glmtune.config_errors import config_problems, format_problems
from glmtune.train.method_registry import METHODS  # the schema's train.method enum (test_method_registry)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text(encoding="utf-8"))


@pytest.fixture()
def config() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load((REPO / "config/config.yaml").read_text(encoding="utf-8")))


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "config").glob("*.yaml")))
def test_shipped_configs_have_no_problems(schema: dict[str, Any], name: str) -> None:
    assert config_problems(yaml.safe_load((REPO / "config" / name).read_text(encoding="utf-8")), schema) == []


def test_a_typo_names_the_closest_key(schema: dict[str, Any], config: dict[str, Any]) -> None:
    config["train"]["learnig_rate"] = 1e-4
    assert config_problems(config, schema) == ["train.learnig_rate: unknown key; did you mean 'train.learning_rate'?"]


def test_an_unknown_key_with_no_close_match_lists_the_known_ones(schema: dict[str, Any], config: dict[str, Any]) -> None:
    config.setdefault("export", {})["zzz"] = 1  # the default job sets no export key: all are the schema's
    (line,) = config_problems(config, schema)
    assert line.startswith("export.zzz: unknown key; known keys: tolerance, dtype")


def test_bad_values_name_what_is_allowed(schema: dict[str, Any], config: dict[str, Any]) -> None:
    config["train"]["method"] = "lorra"
    config["train"]["lora"]["r"] = "8"
    config["tokenize"]["max_input_length"] = 0
    config["evaluate"]["batch_size"] = "big"
    assert config_problems(config, schema) == [
        "evaluate.batch_size: 'big' is not valid; expected an integer >= 1 or 'auto'",
        "tokenize.max_input_length: 0 should be >= 1",
        "train.lora.r: '8' should be an integer (a number in quotes is a string: write 8 without quotes)",
        f"train.method: 'lorra' is not allowed; use one of {', '.join(METHODS)} (did you mean lora?)",
    ]


def test_trackers_as_one_string_pass_and_a_name_no_tracker_has_is_named(schema: dict[str, Any], config: dict[str, Any]) -> None:
    for text in ("none", "tensorboard", "tensorboard,wandb"):
        config["train"]["report_to"] = text
        assert config_problems(config, schema) == []
    config["train"]["report_to"] = "all"  # the Trainer's "every installed tracker": name them
    (line,) = config_problems(config, schema)
    assert line.startswith("train.report_to: 'all' is not `none` or tracker names (tensorboard, wandb, swanlab, mlflow)")


def test_a_number_yaml_reads_as_a_string_says_how_to_write_it(schema: dict[str, Any]) -> None:
    """PyYAML (YAML 1.1) needs a dot in the mantissa and a sign in the exponent: `learning_rate: 1e-4` and
    `max_new_tokens: 1.0e2` arrive as strings; 1.0e-2 and 1.0e+2 as numbers. Each hint is read back as a number."""
    config = yaml.safe_load("datasets: {d: {source: demo}}\nmodel: {name: m, source: tiny}\n"
                            "train: {learning_rate: 1e-4, weight_decay: 1.0e-2, warmup_steps: 1E2}\n"
                            "evaluate: {batch_size: '16', max_new_tokens: 1.0e2}\n")
    assert config["train"]["learning_rate"] == "1e-4" and config["train"]["weight_decay"] == 0.01
    assert config_problems(config, schema) == [
        "evaluate.batch_size: '16' is not valid; expected an integer >= 1 or 'auto' (a number in quotes is a string: "
        "write 16 without quotes)",
        "evaluate.max_new_tokens: '1.0e2' should be an integer (YAML reads 1.0e2 as a string: write 1.0e+2)",
        "train.learning_rate: '1e-4' should be a number (YAML reads 1e-4 as a string: write 1.0e-4)",
        "train.warmup_steps: '1E2' should be an integer (YAML reads 1E2 as a string: write 1.0e+2)",
    ]
    assert [yaml.safe_load(text) for text in ("1.0e-4", "1.0e+2")] == [1.0e-4, 100.0]  # what the hints write


def test_a_missing_required_key(schema: dict[str, Any], config: dict[str, Any]) -> None:
    del config["model"]["source"]
    assert config_problems(config, schema) == ["model: 'source' is a required property"]


def test_the_message_is_short_however_many_problems(schema: dict[str, Any], config: dict[str, Any]) -> None:
    for number in range(20):
        config["train"][f"typo{number}"] = number
    message = format_problems(config_problems(config, schema))
    assert message.splitlines()[0] == "config: 20 problems (workflow/schemas/config.schema.yaml)"
    assert len(message.splitlines()) == 10 and message.endswith("... and 12 more")


def test_an_empty_path_is_named_not_read_as_the_working_folder(schema: dict[str, Any], config: dict[str, Any]) -> None:
    """'' is the folder snakemake runs in: a dataset file left empty was refused as 'a folder', a model path as the
    checkout; each path key says it is empty instead."""
    config["datasets"]["mine"] = {"source": "path", "format": "alpaca", "files": {"train": "", "test": ["t.json", ""]}}
    config["datasets"]["lf"] = {"source": "llamafactory", "dataset_info": "", "name": "x"}
    config["model"] = {"name": "m", "source": "path", "path": ""}
    config["train"]["deepspeed"] = ""
    assert config_problems(config, schema) == [
        "datasets.lf.dataset_info: '' should be non-empty", "datasets.mine.files.test.1: '' should be non-empty",
        "datasets.mine.files.train: '' should be non-empty", "model.path: '' should be non-empty",
        "train.deepspeed: '' should be non-empty"]


def test_keys_yaml_reads_as_numbers_booleans_or_null_are_named_before_anything_indexes_them(schema: dict[str, Any]) -> None:
    """A dataset named 2024 crashed the workflow with a TypeError; `on:` is True to YAML 1.1, `~:` is None."""
    config = yaml.safe_load("datasets:\n  2024: {source: demo, clean: {replace: {2023: '2024'}}}\n  ~: {source: demo}\n"
                            "model: {name: m, source: tiny}\nruns: {on: {}}\n")
    assert config_problems(config, schema) == [
        "datasets.2024: a key YAML reads as a number, not as a name: write it in quotes, '2024'",
        "datasets.2024.clean.replace.2023: a key YAML reads as a number, not as a name: write it in quotes, '2023'",
        "datasets.None: a key YAML reads as null (as it reads ~ and null), not as a name: write it in quotes",
        "runs.True: a key YAML reads as a boolean (as it reads yes, no, on, off, true, false), not as a name: write it "
        "in quotes"]
    quoted = yaml.safe_load("datasets:\n  '2024': {source: demo}\nmodel: {name: m, source: tiny}\nruns: {'on': {}}\n")
    assert config_problems(quoted, schema) == []


def test_a_key_written_in_the_wrong_section_or_as_another_tool_names_it_names_where_it_goes(
        schema: dict[str, Any]) -> None:
    """A LLaMA-Factory training YAML's keys, and ours written one level off, point at this config's key."""
    config = yaml.safe_load("datasets: {d: {source: demo}}\nmodel: {name: m, source: tiny}\nlearning_rate: 1.0e-4\n"
                            "num_train_epochs: 3\nencoding: gbk\n"
                            "train: {per_device_train_batch_size: 4, cutoff_len: 512, lora: {lora_rank: 8}}\n")
    assert config_problems(config, schema) == [
        "encoding: unknown key; did you mean 'datasets.<name>.encoding'?",
        "learning_rate: unknown key; did you mean 'train.learning_rate'?",
        "num_train_epochs: unknown key; num_train_epochs (LLaMA-Factory, the GLM finetune demos) is train.num_epochs here",
        "train.cutoff_len: unknown key; did you mean 'tokenize.cutoff_len'?",
        "train.per_device_train_batch_size: unknown key; per_device_train_batch_size (LLaMA-Factory, the GLM finetune "
        "demos) is train.batch_size here",
        "train.lora.lora_rank: unknown key; lora_rank (LLaMA-Factory, the GLM finetune demos) is train.lora.r here"]


def test_another_tools_key_is_named_before_a_close_key_of_ours(schema: dict[str, Any]) -> None:
    """`template` is not `evaluate`, and `train.lora_rank` not `train.lora`, as difflib's closest keys had it."""
    config = yaml.safe_load("datasets: {d: {source: demo, format: advertisegen, files: {all: train.json}}}\n"
                            "model: {name: m, source: tiny}\ntemplate: glm4\nquantization_bit: 4\ntrain: {lora_rank: 8}\n")
    assert config_problems(config, schema) == [
        "quantization_bit: unknown key; quantization_bit (LLaMA-Factory, the GLM finetune demos) is train.method "
        "(qlora: a 4-bit NF4 base) here",
        "template: unknown key; template (LLaMA-Factory, the GLM finetune demos) is model.template here",
        "train.lora_rank: unknown key; lora_rank (LLaMA-Factory, the GLM finetune demos) is train.lora.r here"]


def test_a_sampling_setting_says_the_evaluation_is_greedy_not_a_close_key(schema: dict[str, Any]) -> None:
    """`evaluate.do_sample` was answered "did you mean 'evaluate.max_samples'?" (h13)."""
    config = yaml.safe_load("datasets: {d: {source: demo, format: advertisegen, files: {all: train.json}}}\n"
                            "model: {name: m, source: tiny}\nevaluate: {do_sample: true, temperature: 0.8}\n")
    assert [line.split(";")[0] for line in config_problems(config, schema)] == [
        "evaluate.do_sample: unknown key", "evaluate.temperature: unknown key"]
    assert all("the evaluation decodes greedily" in line and "did you mean" not in line
               for line in config_problems(config, schema))


def test_every_key_another_tool_names_points_at_a_key_the_schema_has(schema: dict[str, Any]) -> None:
    from glmtune.config_errors import OTHER_TOOLS_KEYS, key_paths

    paths = set(key_paths(schema))
    for target in OTHER_TOOLS_KEYS.values():
        assert target.split(" ")[0] in paths, target


def test_another_tools_split_name_names_ours(schema: dict[str, Any]) -> None:
    config = yaml.safe_load("datasets: {d: {source: path, format: alpaca, files: {training: t.json, dev: d.json, "
                            "val: v.json}}}\nmodel: {name: m, source: tiny}\n")
    assert config_problems(config, schema) == [
        "datasets.d.files.dev: unknown key; the splits are all, train, validation, test: dev is test (the demos "
        "evaluate on dev.json: `test: dev.json`) or validation here",
        "datasets.d.files.training: unknown key; the splits are all, train, validation, test: training is train here",
        "datasets.d.files.val: unknown key; the splits are all, train, validation, test: val is validation here"]


def test_nan_and_infinity_are_refused_wherever_written(schema: dict[str, Any], config: dict[str, Any]) -> None:
    """The schema's bounds let them through (NaN compares false with every bound; infinity passes a lower one):
    a learning rate of .nan reached the trainer, a reject ratio of .nan let every record be rejected."""
    written = yaml.safe_load("""
    train: {learning_rate: .nan, num_epochs: .inf}
    datasets: {synthetic_adgen: {max_reject_ratio: .NaN}}
    runs: {hot: {train: {warmup_ratio: -.inf}}}
    """)
    config["train"].update(written["train"])
    config["datasets"]["synthetic_adgen"].update(written["datasets"]["synthetic_adgen"])
    config["runs"] = written["runs"]
    assert sorted(config_problems(config, schema)) == sorted(
        f"{key}: {value} (YAML reads .nan and .inf as not-a-number and infinity) is not a value any setting takes: "
        "write a finite number"
        for key, value in [("train.learning_rate", "nan"), ("train.num_epochs", "inf"),
                           ("datasets.synthetic_adgen.max_reject_ratio", "nan"), ("runs.hot.train.warmup_ratio", "-inf")])
