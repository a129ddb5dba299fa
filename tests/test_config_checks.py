"""The config's cross-key checks (glmtune.config_checks) on plain validated configs, without Snakemake: each bad
config fails with the one line config.smk shows as its WorkflowError, and the shipped default passes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from glmtune import config_checks
from glmtune.config_checks import ConfigCheckError, check_config
from glmtune.experiments import run_settings
from helpers.config_check import check, fails, validated
from helpers.settings import schema

from conftest import REPO


def test_the_shipped_default_config_passes() -> None:
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    check(validated(default["datasets"], **{k: v for k, v in default.items() if k != "datasets"}))


@pytest.mark.parametrize(("entry", "message"), [
    ({"source": "path", "format": "alpaca"}, "config: datasets.d.files is required with source: path"),
    ({"source": "path", "files": {"all": "x.json"}}, "config: datasets.d.format is required with source: path"),
    ({"source": "path", "format": "alpaca", "files": {"train": "/no/such.json"}},
     "config: datasets.d.files.train: no such file: /no/such.json"),
    ({"source": "url", "format": "alpaca", "files": {"train": "a.json"}}, "config: datasets.d.url is required with source: url"),
    ({"source": "url", "url": "https://x", "format": "alpaca", "files": {"train": "../a.json"}},
     "config: datasets.d.files.train: not a file inside the download"),
    ({"source": "demo", "format": "advertisegen", "files": {"train": "other.json"}},
     "config: datasets.d.files.train: no such demo file 'other.json'"),
    ({"source": "demo", "format": "advertisegen", "files": {"all": "train.json"}, "encoding": "klingon"},
     "config: datasets.d.encoding: unknown text encoding 'klingon'"),
    ({"source": "demo", "format": "advertisegen", "files": {"test": "dev.json"}},
     "config: datasets: no dataset gives training data (d: test)"),
    ({"source": "demo", "format": "advertisegen", "files": {"train": "train.json"}},
     "config: datasets: no dataset gives test data (d: train; split.test_ratio 0.05): the evaluation"),
    ({"source": "llamafactory", "format": "alpaca"}, "config: datasets.d.dataset_info is required with source: llamafactory"),
    ({"source": "llamafactory", "dataset_info": "/no/dataset_info.json", "name": "x"},
     "config: datasets.d.dataset_info: no such file: /no/dataset_info.json"),
])
def test_a_bad_dataset_names_its_key(entry: dict[str, Any], message: str) -> None:
    assert fails(validated({"d": entry})).startswith(message)


def test_held_out_shares_taking_a_whole_all_file_are_refused() -> None:
    """0.5 + 0.5 passes the schema (each at most 0.5): merge_splits found the empty training split after converting."""
    demo = {"source": "demo", "format": "advertisegen"}
    halves = {"validation_ratio": 0.5, "test_ratio": 0.5}
    assert fails(validated({"d": {**demo, "files": {"all": "train.json"}}}, split=halves)) == (
        "config: split: split.validation_ratio 0.5 + split.test_ratio 0.5 hold out all of datasets.d.files.all, and no "
        "dataset gives other training data: keep their sum below 1 (e.g. validation_ratio 0.1, test_ratio 0.1)")
    # One file cut whole into validation and test beside another dataset's training data: the user's layout.
    check(validated({"d": {**demo, "files": {"all": "train.json"}}, "t": {**demo, "files": {"train": "dev.json"}}}, split=halves))
    # A test file of its own takes the test share off the `all` file (held_out_shares): 0.5 of it still trains.
    check(validated({"d": {**demo, "files": {"all": "train.json", "test": "dev.json"}}}, split={"validation_ratio": 0.5, "test_ratio": 0.5}))


@pytest.mark.parametrize(("entry", "message"), [
    ({"source": "demo", "format": "advertisegen", "files": {"all": "train.json"}, "url": "https://x/a.tar.gz"},
     "config: datasets.d.url is read only with source: url, and this one's source is demo, which would ignore it"),
    ({"source": "demo", "format": "advertisegen", "files": {"all": "train.json"}, "sha256": "0" * 64},
     "config: datasets.d.sha256 is read only with source: url"),
    ({"source": "demo", "format": "advertisegen", "files": {"all": "train.json"}, "dataset_info": "dataset_info.json"},
     "config: datasets.d.dataset_info is read only with source: llamafactory"),
    ({"source": "demo", "format": "advertisegen", "files": {"all": "train.json"}, "columns": {"prompt": "content"}},
     "config: datasets.d.columns is read only with format: alpaca or format: sharegpt, and this one's format is "
     "advertisegen, which would ignore it: set datasets.d.format to the one meant, or remove columns"),
    ({"source": "demo", "format": "advertisegen", "files": {"all": "train.json"}, "tags": {"role_tag": "from"}},
     "config: datasets.d.tags is read only with format: sharegpt"),
], ids=["url", "sha256", "dataset-info", "columns", "tags"])
def test_a_dataset_key_its_source_or_format_does_not_read_is_refused(entry: dict[str, Any], message: str) -> None:
    assert fails(validated({"d": entry})).startswith(message)


def test_a_folder_given_as_a_file_is_named_a_folder(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    entry = {"source": "path", "format": "alpaca", "files": {"all": str(tmp_path / "parts")}}
    assert fails(validated({"d": entry})) == (f"config: datasets.d.files.all: {tmp_path / 'parts'} is a folder, not a "
                                              "file: name its files (a list of files is read as one)")


def test_a_llamafactory_entry_whose_file_name_is_a_folder_reads_its_files_as_one(tmp_path: Path) -> None:
    """As LLaMA-Factory does: every file of the folder (not hidden ones), all of one type."""
    parts = tmp_path / "parts"
    parts.mkdir()
    (tmp_path / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": "parts"}}), encoding="utf-8")
    entry = {"source": "llamafactory", "dataset_info": str(tmp_path / "dataset_info.json"), "name": "mine"}
    assert fails(validated({"d": dict(entry)})) == (f"config: datasets.d: {parts} (the entry's file_name) is a folder "
                                                    "with no file in it: LLaMA-Factory reads a folder's files as one "
                                                    "dataset, all of one type")
    for name in ("b.json", "a.json", ".DS_Store"):
        (parts / name).write_text('[{"instruction": "q", "output": "a"}]', encoding="utf-8")
    config = validated({"d": dict(entry)})
    check(config)
    assert config["datasets"]["d"]["files"] == {"all": [str(parts / "a.json"), str(parts / "b.json")]}
    (parts / "c.parquet").write_bytes(b"PAR1")
    assert fails(validated({"d": dict(entry)})).endswith("is a folder of files of several types (.json, .parquet): "
                                                         "LLaMA-Factory reads a folder's files as one dataset, all of one type")


def test_a_llamafactory_folder_holding_a_folder_stops_naming_it_and_json_with_jsonl_is_one_type(tmp_path: Path) -> None:
    """LLaMA-Factory lists the folder and refuses a subfolder ("File types should be identical"): skipped, its records
    were lost without a word. Its FILEEXT2TYPE reads .json and .jsonl both as json."""
    parts = tmp_path / "parts"
    (parts / "2024").mkdir(parents=True)
    (parts / ".cache").mkdir()  # hidden: not read, as hidden files
    for name in ("a.json", "b.jsonl", "2024/c.jsonl"):
        (parts / name).write_text('{"instruction": "q", "output": "a"}\n', encoding="utf-8")
    (tmp_path / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": "parts"}}), encoding="utf-8")
    entry = {"source": "llamafactory", "dataset_info": str(tmp_path / "dataset_info.json"), "name": "mine"}
    assert fails(validated({"d": dict(entry)})) == (
        f"config: datasets.d: {parts} (the entry's file_name) is a folder holding a folder, 2024, whose files would not "
        "be read (LLaMA-Factory refuses it: \"File types should be identical\"): move its files up into the folder, or "
        "out of it")
    (parts / "2024" / "c.jsonl").rename(parts / "c.jsonl")
    (parts / "2024").rmdir()
    config = validated({"d": dict(entry)})
    check(config)
    assert config["datasets"]["d"]["files"] == {"all": [str(parts / name) for name in ("a.json", "b.jsonl", "c.jsonl")]}


@pytest.mark.parametrize(("content", "says"), [
    (b"{", "line 1 column 2: invalid JSON (Expecting property name enclosed in double quotes); fix it there"),
    ('{"mine": {"file_name": "数据.json"}}'.encode("gbk"), "line 1: cannot decode as UTF-8 (invalid continuation byte); "
                                                           "LLaMA-Factory reads dataset_info.json as UTF-8: save it as UTF-8"),
], ids=["broken", "gbk"])
def test_a_dataset_info_json_that_does_not_read_is_named(tmp_path: Path, content: bytes, says: str) -> None:
    info = tmp_path / "dataset_info.json"
    info.write_bytes(content)
    entry = {"source": "llamafactory", "dataset_info": str(info), "name": "mine"}
    assert fails(validated({"d": entry})).startswith(f"config: datasets.d: {info}: {says}")


def test_a_dataset_info_json_with_a_utf8_bom_reads_as_data_files_do(tmp_path: Path) -> None:
    (tmp_path / "data.json").write_text(json.dumps([{"instruction": "q", "output": "a"}]), encoding="utf-8")
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"mine": {"file_name": "data.json"}}), encoding="utf-8-sig")  # older Windows Notepad's
    config = validated({"d": {"source": "llamafactory", "dataset_info": str(info), "name": "mine"}})
    check(config)
    assert config["datasets"]["d"]["files"] == {"all": str(tmp_path / "data.json")}


def test_a_format_beside_a_llamafactory_entry_must_be_the_entrys(tmp_path: Path) -> None:
    """Replaced by the entry's formatting without a word, a format written for another file would pass unseen."""
    (tmp_path / "data.json").write_text(json.dumps([{"instruction": "q", "output": "a"}]), encoding="utf-8")
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"mine": {"file_name": "data.json"}}), encoding="utf-8")
    entry = {"source": "llamafactory", "dataset_info": str(info), "name": "mine"}
    assert fails(validated({"d": {**entry, "format": "sharegpt"}})) == (
        f"config: datasets.d.format: sharegpt, but the dataset_info.json entry 'mine' ({info}) is alpaca (its "
        "`formatting`; alpaca where it writes none), as LLaMA-Factory reads it: remove datasets.d.format (the entry "
        "says it), or name the entry meant")
    config = validated({"d": {**entry, "format": "alpaca"}})
    check(config)
    assert config["datasets"]["d"]["format"] == "alpaca"


def test_the_configs_columns_and_tags_are_merged_key_by_key_over_the_entrys(tmp_path: Path) -> None:
    """A config `tags: {assistant_tag: bot}` renames one tag: the entry's role_tag: role and the rest stay."""
    (tmp_path / "o.json").write_text("[]", encoding="utf-8")
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"o": {"file_name": "o.json", "formatting": "sharegpt", "columns": {"messages": "messages"},
                                      "tags": tags}}), encoding="utf-8")
    entry = {"source": "llamafactory", "dataset_info": str(info), "name": "o"}
    config = validated({"d": {**entry, "tags": {"assistant_tag": "bot"}, "columns": {"system": "sys"}}})
    check(config)
    dataset = config["datasets"]["d"]
    assert dataset["columns"] == {"messages": "messages", "system": "sys", "tools": None}
    assert dataset["tags"] == {**tags, "assistant_tag": "bot", "observation_tag": None, "function_tag": None,
                               "system_tag": None}


def test_a_llamafactory_entry_is_resolved_in_place(tmp_path: Path) -> None:
    (tmp_path / "data.json").write_text(json.dumps([{"instruction": "q", "output": "a"}]), encoding="utf-8")
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"mine": {"file_name": "data.json"}}), encoding="utf-8")
    config = validated({"d": {"source": "llamafactory", "dataset_info": str(info), "name": "mine"}})
    check(config)
    dataset = config["datasets"]["d"]
    assert (dataset["format"], dataset["files"]) == ("alpaca", {"all": str(tmp_path / "data.json")})
    assert "columns" in dataset
    config = validated({"d": {"source": "llamafactory", "dataset_info": str(info), "name": "theirs"}})
    assert fails(config).startswith("config: datasets.d: ")


def test_a_llamafactory_entrys_num_samples_is_said_in_the_config_not_ignored(tmp_path: Path) -> None:
    """LLaMA-Factory draws num_samples records (repeating when the file holds fewer); ignored, the run would train on
    another amount than the registry says."""
    (tmp_path / "data.json").write_text(json.dumps([{"instruction": "q", "output": "a"}]), encoding="utf-8")
    info = tmp_path / "dataset_info.json"
    info.write_text(json.dumps({"mine": {"file_name": "data.json", "num_samples": 500}}), encoding="utf-8")
    entry = {"source": "llamafactory", "dataset_info": str(info), "name": "mine"}
    assert fails(validated({"d": dict(entry)})) == (
        "config: datasets.d: the dataset_info.json entry 'mine' asks for num_samples: 500 (LLaMA-Factory: that many "
        "records, drawn at random, repeated when the file holds fewer): say it in the config, as datasets.d.max_samples "
        "(fewer records) or sample_ratio (repeats); either one set there overrides num_samples")
    for given in ({"max_samples": 300}, {"sample_ratio": 2.0}):
        config = validated({"d": {**entry, **given}})
        check(config)
        assert "num_samples" not in config["datasets"]["d"]


def test_a_dataset_key_the_schema_does_not_know_is_refused() -> None:
    """The typed section and the schema agree: a key the schema would not fill (a config that skipped validation)."""
    config = validated({"d": {"source": "demo", "format": "advertisegen", "files": {"all": "train.json"}}})
    del config["datasets"]["d"]["dedupe"]
    assert "missing key(s) datasets.d.dedupe" in fails(config)


def test_a_length_limit_no_sample_fits_is_refused_naming_the_family() -> None:
    message = fails(validated(model={"name": "m", "source": "tiny", "template": "chatglm3"}, tokenize={"cutoff_len": 2}))
    assert message.startswith("config: tokenize.cutoff_len is 2 tokens: no sample fits, as the chatglm3 chat prefix")


def test_one_shard_of_a_sharded_data_file_is_refused_naming_the_shards_left_out(tmp_path: Path) -> None:
    """A Hugging Face dataset's train-00000-of-00003.parquet alone would train on a third of it."""
    for index in range(3):
        (tmp_path / f"train-{index:05d}-of-00003.parquet").write_bytes(b"PAR1")
    (tmp_path / "test-00000-of-00001.parquet").write_bytes(b"PAR1")  # a one-shard file has nothing left out

    def entry(**files: str) -> dict[str, Any]:
        return {"source": "path", "format": "alpaca", "files": {part: str(tmp_path / name) for part, name in files.items()}}

    message = fails(validated({"d": entry(train="train-00000-of-00003.parquet", test="test-00000-of-00001.parquet")}))
    assert message == (f"config: datasets.d.files.train: {tmp_path}/train-00000-of-00003.parquet is one shard of several, "
                       "and 2 more beside it would be left out (train-00001-of-00003.parquet, train-00002-of-00003.parquet): "
                       "name every shard (a list of files is read as one)")
    check(validated({"d": entry(train="train-00000-of-00003.parquet", validation="train-00001-of-00003.parquet",
                                test="train-00002-of-00003.parquet")}))  # every shard named: a layout of the user's
    shards = [str(tmp_path / f"train-{index:05d}-of-00003.parquet") for index in range(3)]
    check(validated({"d": {**entry(test="test-00000-of-00001.parquet"), "files": {
        "train": shards, "test": str(tmp_path / "test-00000-of-00001.parquet")}}}))  # a list is read as one file
    assert fails(validated({"d": {**entry(), "files": {"train": [shards[0], shards[0]], "test": shards[1:]}}})).startswith(
        f"config: datasets.d.files.train: a file is named twice: {shards[0]} (twice in files.train); its records would "
        "be read twice")
    (tmp_path / "train-00001-of-00003.parquet").unlink()
    assert fails(validated({"d": entry(train="train-00000-of-00003.parquet", test="train-00002-of-00003.parquet")})
                 ).endswith("is one shard of several, and only 2 of its 3 shards are there (a download cut short?): name "
                            "every shard (a list of files is read as one)")


def test_several_runs_are_named_in_the_message() -> None:
    config = validated(runs={"a": {}, "b": {"tokenize": {"cutoff_len": 2}}})
    assert fails(config).startswith("config: runs.b: tokenize.cutoff_len is 2 tokens")


def test_eval_steps_without_validation_data_is_refused() -> None:
    given = {"d": {"source": "demo", "format": "advertisegen", "files": {"train": "train.json", "test": "dev.json"}}}
    check(validated(given))  # no validation loss asked for: trains without one
    assert fails(validated(given, train={"eval_steps": 50})).startswith(
        "config: train.eval_steps 50 asks for a validation loss, but no dataset gives validation data (d: test, train; "
        "split.validation_ratio 0.05): give one a `validation` file")
    assert fails(validated(given, runs={"a": {}, "b": {"train": {"eval_steps": 10}}})).startswith(
        "config: runs.b: train.eval_steps 10 asks for a validation loss")
    check(validated(train={"eval_steps": 50}))  # an `all` file with the default validation share
    assert fails(validated(split={"validation_ratio": 0.0}, train={"eval_steps": 50})).startswith(
        "config: train.eval_steps 50 asks for a validation loss")


def test_a_missing_deepspeed_file_is_refused() -> None:
    message = fails(validated(train={"deepspeed": "/no/ds.json"}))
    assert message.startswith("config: train.deepspeed: no such file: /no/ds.json")


@pytest.mark.parametrize(("text", "problem"), [
    ('{"zero_optimization": {"stage": 2},\n "bf16": {"enabled": "auto"},}', "line 2: not valid JSON (Expecting property name"),
    ('["stage", 3]', "not a JSON object of DeepSpeed settings"),
    ('{"zero_optimization": {"stage": 2, "stage": 3}}', "zero_optimization.stage written twice: JSON keeps only the last"),
    ('{"zero_optimization": {"stage": 2}, "train_micro_batch_size_per_gpu": 16}',
     "train_micro_batch_size_per_gpu is 16 here but train.batch_size is 4 (the Trainer refuses the difference only once"),
])
def test_a_deepspeed_file_deepspeed_would_refuse_or_misread_stops_before_any_job(
        tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "ds.json"
    path.write_text(text, encoding="utf-8")
    assert fails(validated(train={"deepspeed": str(path)})).startswith(f"config: train.deepspeed: {path}: {problem}")


def test_the_shipped_deepspeed_files_pass() -> None:
    from conftest import REPO

    pytest.importorskip("deepspeed", reason="DeepSpeed is an optional extra: pip install -e '.[deepspeed]'")

    for path in sorted((REPO / "config/deepspeed").glob("*.json")):
        check(validated(train={"deepspeed": str(path)}))


def test_the_checks_are_plain_functions() -> None:
    """Each check runs on its own, as config.smk's former functions did."""
    config_checks.check_encoding("d", "gb18030")
    config_checks.check_fetched_file("d", "url", "train", "AdvertiseGen/train.json")
    with pytest.raises(ConfigCheckError, match=r"^config: datasets\.d\.encoding: unknown text encoding"):
        config_checks.check_encoding("d", "nope")


def test_a_path_not_there_says_where_it_was_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths are read from the working directory; one found from a --configfile's folder is named, not
    taken."""
    workdir, project = tmp_path / "workflow", tmp_path / "project"
    workdir.mkdir()
    (project / "data").mkdir(parents=True)
    (project / "data" / "train.json").write_text('{"content": "a", "summary": "b"}\n', encoding="utf-8")
    monkeypatch.chdir(workdir)
    config = validated({"mine": {"source": "path", "format": "advertisegen", "files": {"all": "data/train.json"}}})
    with pytest.raises(ConfigCheckError) as err:
        check_config(config, run_settings(config, schema()), gpu_from_scheduler=False, config_dirs=[project])
    assert str(err.value) == (
        f"config: datasets.mine.files.all: no such file: data/train.json (a relative path is read from the working "
        f"directory, {workdir.resolve()}; data/train.json is there from {project}, the folder of a --configfile: "
        "write it from the working directory or as an absolute path)")
    config["model"].update(source="path", path="models/glm")  # found nowhere: where it was looked for, no more
    config["datasets"]["mine"]["files"]["all"] = str(project / "data" / "train.json")
    assert fails(config).endswith(f"no config.json) (a relative path is read from the working directory, "
                                  f"{workdir.resolve()})")
    config["model"]["path"] = str(tmp_path / "nowhere")  # absolute: the message as it was
    assert fails(config) == f"config: model.path: {tmp_path / 'nowhere'} is not a model folder (no config.json)"


def test_one_file_under_two_keys_of_a_dataset_stops_however_it_is_spelled(tmp_path: Path) -> None:
    """Two --configfile files merged key by key give `all` from one and `train` from the other: the file would be
    read twice (each training record twice, the validation share also trained on)."""
    from glmtune.config_layers import layer_config

    (tmp_path / "data").mkdir()
    data, test = tmp_path / "data" / "train.json", tmp_path / "data" / "dev.json"
    data.write_text('{"content": "a", "summary": "b"}\n', encoding="utf-8")
    test.write_text('{"content": "c", "summary": "d"}\n', encoding="utf-8")
    base = {"datasets": {"d": {"source": "path", "format": "advertisegen", "files": {"all": str(data)}}},
            "model": {"name": "m", "source": "tiny"}}
    over = {"datasets": {"d": {"files": {"train": str(data), "test": str(test)}}}}
    layered = layer_config({}, [base, over], {}, schema())
    assert fails(validated(layered["datasets"])).startswith(
        f"config: datasets.d.files.train: a file is named twice: {data} (in files.all and in files.train); its "
        "records would be read twice: name each file once (the `files` of several --configfile files are merged key "
        "by key")
    spelled = str(tmp_path / "data" / ".." / "data" / "train.json")
    message = fails(validated({"d": {"source": "path", "format": "advertisegen",
                                     "files": {"train": [str(data), spelled], "test": str(test)}}}))
    assert message.startswith(f"config: datasets.d.files.train: a file is named twice: {spelled} (twice in files.train)")
    check(validated({"d": {"source": "path", "format": "advertisegen", "files": {"train": str(data), "test": str(test)}}}))
