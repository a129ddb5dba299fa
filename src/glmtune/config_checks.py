"""The cross-key checks of the validated config, run before any job (config.smk turns the error into a WorkflowError).

The schema checks each key on its own; these check what only several keys, or the files they name, show: a dataset's
source and the keys it needs, files that are not there, split layouts without training data, encodings, the model
(glmtune.model_checks), and each run's lengths and method. Each failure is one ConfigCheckError naming the key, raised before any job.
Pure Python (no torch, no Snakemake): tests/test_config_checks.py runs them on plain configs.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from glmtune.config_check_error import ConfigCheckError, check_read, where_looked
from glmtune.config_layers import LOCAL_SOURCES  # read in place: no fetch job
from glmtune.data.records import shards_problem
from glmtune.data_settings import given_files
from glmtune.model_checks import check_model, check_positions

__all__ = ["ConfigCheckError", "check_config"]


def resolve_llamafactory(name: str, dataset: dict[str, Any]) -> None:
    """Fill format, columns, tags and files of a dataset_info.json entry into `dataset`, as LLaMA-Factory reads it; the
    config's own `columns` / `tags` keys win over the entry's, one by one, and its `format` must be the entry's."""
    from glmtune.data.formats import dataset_info_file, from_dataset_info

    for key in ("dataset_info", "name"):
        if not dataset.get(key):
            raise ConfigCheckError(f"config: datasets.{name}.{key} is required with source: llamafactory")
    if not Path(dataset["dataset_info"]).is_file():
        raise ConfigCheckError(f"config: datasets.{name}.dataset_info: no such file: {dataset['dataset_info']}",
                               dataset["dataset_info"])
    try:
        fmt, options = from_dataset_info(dataset["dataset_info"], dataset["name"])
    except (ValueError, KeyError) as err:
        raise ConfigCheckError(f"config: datasets.{name}: {err}") from None
    num_samples = options.pop("num_samples", None)
    if num_samples is not None and dataset["max_samples"] is None and dataset["sample_ratio"] is None:
        raise ConfigCheckError(f"config: datasets.{name}: the dataset_info.json entry {dataset['name']!r} asks for "
                               f"num_samples: {num_samples} (LLaMA-Factory: that many records, drawn at random, repeated "
                               f"when the file holds fewer): say it in the config, as datasets.{name}.max_samples (fewer "
                               "records) or sample_ratio (repeats); either one set there overrides num_samples")
    if dataset.get("format") not in (None, fmt):  # written beside the entry, it would be replaced without a word
        raise ConfigCheckError(f"config: datasets.{name}.format: {dataset['format']}, but the dataset_info.json entry "
                               f"{dataset['name']!r} ({dataset['dataset_info']}) is {fmt} (its `formatting`; alpaca "
                               f"where it writes none), as LLaMA-Factory reads it: remove datasets.{name}.format (the "
                               "entry says it), or name the entry meant")
    dataset["format"] = fmt
    for key, value in options.items():  # the config's columns / tags merged key by key over the entry's
        given = dataset.get(key)
        dataset[key] = {**value, **given} if isinstance(given, dict) else dataset.get(key, value)
    if "files" not in dataset:
        dataset["files"] = {"all": folder_files(name, dataset_info_file(dataset["dataset_info"], dataset["name"]))}


def folder_files(name: str, path: Path) -> str | list[str]:
    """A dataset_info.json entry's file_name: a file, or a folder whose files LLaMA-Factory reads as one dataset (not
    hidden ones; all of one type, as LLaMA-Factory requires: .json and .jsonl are both its json). A folder in it stops,
    as in LLaMA-Factory: its files would be lost without a word."""
    if not path.is_dir():
        return str(path)
    entries = sorted(entry for entry in path.iterdir() if not entry.name.startswith("."))
    if folder := next((entry for entry in entries if not entry.is_file()), None):
        raise ConfigCheckError(f"config: datasets.{name}: {path} (the entry's file_name) is a folder holding a "
                               f"folder, {folder.name}, whose files would not be read (LLaMA-Factory refuses it: \"File "
                               "types should be identical\"): move its files up into the folder, or out of it")
    suffixes = {entry.suffix.lower() for entry in entries}
    if not entries or len({LLAMAFACTORY_FILE_TYPES.get(suffix, suffix) for suffix in suffixes}) > 1:
        raise ConfigCheckError(f"config: datasets.{name}: {path} (the entry's file_name) is a folder "
                               + ("with no file in it" if not entries else f"of files of several types ({', '.join(sorted(suffixes))})")
                               + ": LLaMA-Factory reads a folder's files as one dataset, all of one type")
    return [str(entry) for entry in entries]


# LLaMA-Factory's FILEEXT2TYPE reads these extensions as the type of another (a folder's files are all of one type).
LLAMAFACTORY_FILE_TYPES = {".jsonl": ".json"}


def check_datasets(datasets: Mapping[str, dict[str, Any]], test_ratio: float) -> None:
    """Each dataset's source has the keys it needs and its files are there (a llamafactory entry is resolved in place
    first); then the layouts (check_layout)."""
    from glmtune.data_settings import DatasetSettings
    from glmtune.settings import SettingsError

    for name, dataset in datasets.items():
        if dataset["source"] == "llamafactory":
            resolve_llamafactory(name, dataset)
        for key in ("format", "files"):
            if key not in dataset:
                raise ConfigCheckError(f"config: datasets.{name}.{key} is required with source: {dataset['source']}")
        check_read(f"datasets.{name}", dataset, "source", DATASET_KEYS_READ_BY_SOURCE)
        check_read(f"datasets.{name}", dataset, "format", converter_options_read())
        every_file = [file for entry in dataset["files"].values() for file in given_files(entry)]
        check_named_once(name, dataset["source"], dataset["files"])
        for split, entry in dataset["files"].items():
            for file in given_files(entry):
                check_file(name, dataset["source"], split, file, every_file)
        if dataset["source"] == "url" and not dataset.get("url"):
            raise ConfigCheckError(f"config: datasets.{name}.url is required with source: url")
        check_encoding(name, dataset["encoding"])
        try:  # the schema and the typed section agree
            DatasetSettings.from_config(dataset, f"datasets.{name}")
        except SettingsError as err:
            raise ConfigCheckError(f"config: {err}") from None
    check_layout(datasets, test_ratio)


# Keys only some dataset sources read: given with another, they would be ignored without a word (model sources:
# glmtune.model_checks). A key given with its value null is not given.
DATASET_KEYS_READ_BY_SOURCE = {"url": ("url",), "sha256": ("url",), "dataset_info": ("llamafactory",),
                               "name": ("llamafactory",)}


def converter_options_read() -> dict[str, tuple[str, ...]]:
    """The dataset keys only some formats read (`columns`, `tags`) -> those formats (glmtune.data.formats)."""
    from glmtune.data.formats import CONVERTER_OPTIONS, option_keys

    return {key: tuple(fmt for fmt, options in CONVERTER_OPTIONS.items() if key in options) for key in option_keys()}


def check_named_once(name: str, source: str, files: Mapping[str, Any]) -> None:
    """Each file once in a dataset's `files`, however its path is spelled: named under two keys (`all` and `train`,
    as two --configfile files merged key by key give) its records would be read twice, trained on twice or held out
    and trained on at once."""
    seen: dict[str, str] = {}
    for split, entry in files.items():
        for file in given_files(entry):
            key = str(Path(file).expanduser().resolve()) if source in LOCAL_SOURCES else os.path.normpath(file)
            if key in seen:
                where = f"twice in files.{split}" if seen[key] == split else f"in files.{seen[key]} and in files.{split}"
                raise ConfigCheckError(
                    f"config: datasets.{name}.files.{split}: a file is named twice: {file} ({where}); its records "
                    "would be read twice: name each file once (the `files` of several --configfile files are merged "
                    "key by key, so a later file's `train:` is added to an earlier one's `all:`)")
            seen[key] = split


def check_layout(datasets: Mapping[str, Mapping[str, Any]], test_ratio: float) -> None:
    """Split layouts the config alone shows to leave the training or the test split empty."""
    from glmtune.data.split import layout_problem

    problem = layout_problem({name: list(dataset["files"]) for name, dataset in datasets.items()}, test_ratio)
    if problem:
        raise ConfigCheckError(f"config: datasets: {problem}")


def check_held_out_shares(datasets: Mapping[str, Mapping[str, Any]], split: Mapping[str, Any]) -> None:
    """`all` files whose held-out shares take all of them, with no other training data: the training split would be
    empty, which merge_splits finds only after the conversions, naming no key. One `all` file cut whole into
    validation and test beside another dataset's training data is a layout of the user's."""
    from glmtune.data.split import held_out_shares

    whole = {name: held_out_shares(dataset["files"], split["validation_ratio"], split["test_ratio"])
             for name, dataset in datasets.items() if "all" in dataset["files"]}
    trains = [name for name, dataset in datasets.items()
              if "train" in dataset["files"] or (name in whole and sum(whole[name].values()) < 1)]
    if whole and not trains:
        name, shares = next(iter(whole.items()))
        given = " + ".join(f"split.{kind}_ratio {share}" for kind, share in shares.items() if share)
        raise ConfigCheckError(f"config: split: {given} hold out all of datasets.{name}.files.all, and no dataset gives "
                               "other training data: keep their sum below 1 (e.g. validation_ratio 0.1, test_ratio 0.1)")


def check_validation_wanted(train: Mapping[str, Any], datasets: Mapping[str, Mapping[str, Any]],
                            validation_ratio: float, where: str) -> None:
    """train.eval_steps asks for a validation loss: a layout with no validation data would train without one."""
    from glmtune.data.split import layout_gives

    layouts = {name: list(dataset["files"]) for name, dataset in datasets.items()}
    if train["eval_steps"] and not layout_gives("validation", layouts, validation_ratio):
        keys = "; ".join(f"{name}: {', '.join(sorted(files))}" for name, files in layouts.items())
        raise ConfigCheckError(
            f"config: {where}train.eval_steps {train['eval_steps']} asks for a validation loss, but no dataset gives "
            f"validation data ({keys}; split.validation_ratio {validation_ratio}): give one a `validation` file, set "
            "split.validation_ratio above 0 to hold out a share of an `all` file, or set train.eval_steps: null")


def check_file(name: str, source: str, split: str, file: str, every_file: Sequence[str]) -> None:
    """One file of a dataset's `files.<split>`: there, a file, and not one shard of several alone (`every_file`: all
    the dataset's files); a fetched dataset's name (check_fetched_file)."""
    if source in LOCAL_SOURCES and Path(file).is_dir():
        raise ConfigCheckError(f"config: datasets.{name}.files.{split}: {file} is a folder, not a file: name its files "
                               "(a list of files is read as one)")
    if source in LOCAL_SOURCES and not Path(file).is_file():
        raise ConfigCheckError(f"config: datasets.{name}.files.{split}: no such file: {file}", file)
    if source in LOCAL_SOURCES and (problem := shards_problem(Path(file), every_file)):
        raise ConfigCheckError(f"config: datasets.{name}.files.{split}: {file} is one shard of several, and {problem}: "
                               "name every shard (a list of files is read as one)")
    check_fetched_file(name, source, split, file)


def check_fetched_file(name: str, source: str, split: str, file: str) -> None:
    """A url dataset's files lie inside its download, a demo dataset's are the generator's: known before any job."""
    from glmtune.fetch import fetched_file_problem

    problem = fetched_file_problem(source, file)
    if problem:
        raise ConfigCheckError(f"config: datasets.{name}.files.{split}: {problem}")


def check_encoding(name: str, encoding: str) -> None:
    """Otherwise an unknown encoding fails only in the convert job."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigCheckError(f"config: datasets.{name}.encoding: unknown text encoding {encoding!r} "
                               "(e.g. utf-8, utf-8-sig, gbk, gb18030)") from None


def check_tokenize(lengths: Mapping[str, Any], where: str, family: str) -> None:
    """A length limit below the shortest trainable sample drops every sample (training then crashes mid-run)."""
    from glmtune.config_rules import min_cutoff_len
    from glmtune.settings import TokenizeSettings

    settings = TokenizeSettings.from_config(lengths)
    limit, shortest = settings.cutoff, min_cutoff_len(family)
    if limit < shortest:
        raise ConfigCheckError(f"config: {where}{settings.cutoff_setting} is {limit} tokens: no sample fits, as "
                               f"the {family} chat prefix, the answer's role header and one answer token take "
                               f"{shortest}; raise it (the demos keep 128 + 256 + 1)")


def check_train(train: Mapping[str, Any], evaluate: Mapping[str, Any], where: str, *, trust_remote_code: bool,
                family: str, gpu_from_scheduler: bool) -> None:
    """Method settings known to fail mid-run (or, with remote code, LoRA targets not named as its modules are), and
    the KV cache the method allows: decided here, once; the stages do not decide them again. `where` names the run
    ("runs.<name>: ") where the config has several."""
    from glmtune.config_rules import MethodError, check_cache, check_method, check_report_to, check_schedule
    from glmtune.deepspeed_file import deepspeed_file_problem
    from glmtune.settings import EvaluateSettings, SettingsError, TrainSettings

    try:
        settings, evaluating = TrainSettings.from_config(train), EvaluateSettings.from_config(evaluate)
        check_method(settings, trust_remote_code=trust_remote_code, family=family,
                     gpu_from_scheduler=gpu_from_scheduler)
        check_report_to(settings.report_to)
        check_cache(settings, evaluating)
        check_schedule(settings)
    except (MethodError, SettingsError, ValueError) as err:
        raise ConfigCheckError(f"config: {where}{err}") from None
    if settings.deepspeed and not Path(settings.deepspeed).is_file():
        raise ConfigCheckError(f"config: {where}train.deepspeed: no such file: {settings.deepspeed} (config/deepspeed/ "
                               "has ds_zero_2.json and ds_zero_3.json)", settings.deepspeed)
    if settings.deepspeed and (problem := deepspeed_file_problem(Path(settings.deepspeed), settings)):
        raise ConfigCheckError(f"config: {where}train.deepspeed: {settings.deepspeed}: {problem}")


def run_prefix(run: str, config: Mapping[str, Any], runs: Mapping[str, Any]) -> str:
    """How a message names the run: nothing where the config has one run of its own, else "runs.<name>: "."""
    return "" if len(runs) == 1 and not (config["runs"].get(run) or config["grid"]) else f"runs.{run}: "


def check_config(config: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]], *, gpu_from_scheduler: bool,
                 config_dirs: Sequence[str | Path] = ()) -> None:
    """Every check, in order, on the validated config and its runs (glmtune.experiments.run_settings): the first
    failure raises; one about a path that is not there says where it was looked for (`config_dirs`: the folders of
    the --configfile files). Resolves llamafactory datasets in config["datasets"] in place."""
    try:
        _check_config(config, runs, gpu_from_scheduler)
    except ConfigCheckError as err:
        if err.path is None:
            raise
        raise ConfigCheckError(f"{err}{where_looked(err.path, config_dirs)}") from None


def _check_config(config: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]], gpu_from_scheduler: bool) -> None:
    from glmtune.settings import ExportSettings, SettingsError, stage_section

    check_datasets(config["datasets"], config["split"]["test_ratio"])
    check_held_out_shares(config["datasets"], config["split"])
    model = config["model"]
    check_model(model)
    try:  # the schema and the typed section agree
        ExportSettings.from_config(stage_section(config, "export"))
    except SettingsError as err:
        raise ConfigCheckError(f"config: {err}") from None
    for run, settings in runs.items():
        where = run_prefix(run, config, runs)
        check_tokenize(settings["tokenize"], where, model["template"])
        check_positions(model, settings, where)
        check_train(settings["train"], settings["evaluate"], where, trust_remote_code=model["trust_remote_code"],
                    family=model["template"], gpu_from_scheduler=gpu_from_scheduler)
        check_validation_wanted(settings["train"], config["datasets"], config["split"]["validation_ratio"], where)
