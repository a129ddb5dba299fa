"""The cross-key checks of the validated config, run before any job (common.smk turns the error into a WorkflowError).

The schema checks each key on its own; these check what only several keys, or the files they name, show: a dataset's
source and the keys it needs, files that are not there, split layouts without training data, encodings, the model's
source and its weight files,
and each run's lengths and method. Each failure is one ConfigCheckError naming the key, raised before any job.
Pure Python (no torch, no Snakemake): tests/test_config_checks.py runs them on plain configs.
"""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from glmtune.data.records import shards_problem
from glmtune.data_settings import given_files
from glmtune.family import is_native_config, model_type_problem
from glmtune.config_layers import LOCAL_SOURCES  # read in place: no fetch job (common.smk takes it from here)
from glmtune.model.weight_files import WeightFilesError, weight_files


class ConfigCheckError(ValueError):
    """The config points at something that is not there, or its keys disagree; the message starts with `config:`.
    `path`: the path the config gave, where one is not there (check_config then says where it was looked for)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


def where_looked(path: str, config_dirs: Sequence[str | Path]) -> str:
    """A relative path is read from the working directory (where snakemake runs), not from the config file's folder:
    say so, and name a --configfile folder the path would have been found in (found, not taken: refuse, not guess)."""
    if Path(path).is_absolute():
        return ""
    cwd = Path.cwd().resolve()
    beside = [Path(d) for d in config_dirs if Path(d).resolve() != cwd and (Path(d) / path).exists()]
    also = (f"; {path} is there from {beside[0]}, the folder of a --configfile: write it from the working directory "
            "or as an absolute path") if beside else ""
    return f" (a relative path is read from the working directory, {cwd}{also})"


def resolve_llamafactory(name: str, dataset: dict[str, Any]) -> None:
    """Fill format, columns, tags and files of a dataset_info.json entry into `dataset`, as LLaMA-Factory reads it."""
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
    dataset["format"] = fmt
    dataset.update({k: v for k, v in options.items() if k not in dataset})
    if "files" not in dataset:
        dataset["files"] = {"all": folder_files(name, dataset_info_file(dataset["dataset_info"], dataset["name"]))}


def folder_files(name: str, path: Path) -> str | list[str]:
    """A dataset_info.json entry's file_name: a file, or a folder whose files LLaMA-Factory reads as one dataset (not
    hidden ones; all of one type, as LLaMA-Factory requires)."""
    if not path.is_dir():
        return str(path)
    files = sorted(str(file) for file in path.iterdir() if file.is_file() and not file.name.startswith("."))
    kinds = {Path(file).suffix.lower() for file in files}
    if not files or len(kinds) > 1:
        raise ConfigCheckError(f"config: datasets.{name}: {path} (the entry's file_name) is a folder "
                               + ("with no file in it" if not files else f"of files of several types ({', '.join(sorted(kinds))})")
                               + ": LLaMA-Factory reads a folder's files as one dataset, all of one type")
    return files


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


# Keys only some sources read: given with another, they would be ignored without a word (a `path` under
# `source: tiny` trains a random model). A key given with its value null is not given.
MODEL_KEYS_READ_BY_SOURCE = {"path": ("path",), "repo_id": ("huggingface", "modelscope"),
                             "revision": ("huggingface", "modelscope")}
DATASET_KEYS_READ_BY_SOURCE = {"url": ("url",), "sha256": ("url",), "dataset_info": ("llamafactory",),
                               "name": ("llamafactory",)}


def converter_options_read() -> dict[str, tuple[str, ...]]:
    """The dataset keys only some formats read (`columns`, `tags`) -> those formats (glmtune.data.formats)."""
    from glmtune.data.formats import CONVERTER_OPTIONS

    keys = {key for options in CONVERTER_OPTIONS.values() for key in options}
    return {key: tuple(fmt for fmt, options in CONVERTER_OPTIONS.items() if key in options) for key in sorted(keys)}


def check_read(where: str, section: Mapping[str, Any], chooser: str, read_by: Mapping[str, tuple[str, ...]]) -> None:
    """Refuse a key of `section` that its `chooser` (source, format) does not read: the user meant something by it."""
    chosen = section.get(chooser)
    for key, readers in read_by.items():
        if section.get(key) is not None and chosen not in readers:
            readers_text = " or ".join(f"{chooser}: {reader}" for reader in readers)
            raise ConfigCheckError(f"config: {where}.{key} is read only with {readers_text}, and this one's {chooser} "
                                   f"is {chosen}, which would ignore it: set {where}.{chooser} to the one meant, or "
                                   f"remove {key} (`{key}: null` in a later file or --config)")


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


def check_model(model: Mapping[str, Any]) -> None:
    """The keys model.source needs, a local folder that is a model, and remote code only where there is some."""
    from glmtune.settings import SettingsError, TinySettings

    check_read("model", model, "source", MODEL_KEYS_READ_BY_SOURCE)
    needs = {"path": "path", "huggingface": "repo_id", "modelscope": "repo_id"}.get(model["source"])
    if needs and not model.get(needs):
        raise ConfigCheckError(f"config: model.{needs} is required with model.source: {model['source']}")
    if model["source"] == "path":
        if not Path(model["path"], "config.json").is_file():
            raise ConfigCheckError(f"config: model.path: {model['path']} is not a model folder (no config.json)",
                                   model["path"])
        if problem := model_type_problem(folder_config(model["path"])):
            raise ConfigCheckError(f"config: model.path: {Path(model['path'], 'config.json')}: {problem}", model["path"])
        try:
            files = weight_files(model["path"])
        except WeightFilesError as err:
            raise ConfigCheckError(f"config: model.path: {err}") from None
        if not model["trust_remote_code"] and is_native_config(folder_config(model["path"])) and \
                not any(file.suffix == ".safetensors" for file in files):
            raise ConfigCheckError(bin_weights_problem(model["path"]))
        check_template_fits(model["path"], model["template"])
        check_tokenizer_files(model["path"], folder_config(model["path"]))
    if model["trust_remote_code"] and model["source"] == "tiny":
        raise ConfigCheckError("config: model.trust_remote_code runs an original checkpoint's own modeling code; "
                               "model.source: tiny has none: set model.trust_remote_code: false")
    try:  # the schema and the typed section agree
        tiny = TinySettings.from_config(model["tiny"])
    except SettingsError as err:
        raise ConfigCheckError(f"config: {err}") from None
    if model["source"] == "tiny" and (problem := tiny_heads_problem(tiny)):
        raise ConfigCheckError(f"config: model.tiny: {problem}")


def tiny_heads_problem(tiny: Any) -> str | None:
    """Head counts the attention cannot split into (the train job would fail on a tensor size, naming no key)."""
    if tiny.hidden_size % tiny.num_attention_heads:
        return (f"hidden_size {tiny.hidden_size} is not a multiple of num_attention_heads {tiny.num_attention_heads} "
                "(each head takes an equal share)")
    if tiny.num_attention_heads % tiny.num_key_value_heads:
        return (f"num_attention_heads {tiny.num_attention_heads} is not a multiple of num_key_value_heads "
                f"{tiny.num_key_value_heads} (each key/value head serves an equal group of query heads)")
    return None


def bin_weights_problem(folder: str) -> str:
    """A native folder with pytorch_model*.bin weights only: training loads them, but the export streams safetensors
    one tensor at a time (glmtune.export.streamed) and would stop at the very end of the job, after training."""
    return (f"config: model.path: {folder} holds its weights as pytorch_model*.bin only; the export reads safetensors "
            "(tensor by tensor, never the whole model), so results/merged_model would fail after training. Save a "
            "copy in safetensors once and point model.path at it: python -c \"from transformers import "
            f"AutoModelForCausalLM, AutoTokenizer; AutoModelForCausalLM.from_pretrained('{folder}').save_pretrained("
            f"'{folder}-safetensors'); AutoTokenizer.from_pretrained('{folder}').save_pretrained("
            f"'{folder}-safetensors')\"")


def check_tokenizer_files(folder: str, config: Mapping[str, Any]) -> None:
    """The folder has a tokenizer, and one of this model: a model saved without its tokenizer failed in the first
    evaluation with transformers' "Couldn't instantiate the backend tokenizer"; another model's larger tokenizer
    with a bare IndexError (on a GPU, a device-side assert) when an id passed the embedding's rows."""
    from glmtune.family import is_native_config
    from glmtune.model.tokenizer_files import largest_token_id_of_folder

    native = is_native_config(config)
    files = ("tokenizer.json", "tokenizer.model") if native else ("tokenizer.model",)
    if not any(Path(folder, name).is_file() for name in files):
        raise ConfigCheckError(f"config: model.path: {folder} has no tokenizer ({' or '.join(files)}): save the "
                               "tokenizer with the model (tokenizer.save_pretrained into the same folder)")
    rows = config.get("padded_vocab_size") or config.get("vocab_size")
    largest = largest_token_id_of_folder(folder)
    if isinstance(rows, int) and largest is not None and largest >= rows:
        raise ConfigCheckError(f"config: model.path: {folder}/tokenizer.json gives ids up to {largest:,}, but "
                               f"config.json's vocabulary has {rows:,} rows: the tokenizer is another model's (its ids "
                               "would index past the embedding); copy this model's own tokenizer files")


def check_template_fits(folder: str, template: str) -> None:
    """A folder whose tokenizer lacks the template's prefix tokens is of another family: found here, not by the
    tokenize job after every dataset's conversion (glmtune.chat_template refuses such tokens there too)."""
    from glmtune.family import FAMILIES, template_hint
    from glmtune.model.tokenizer_files import added_tokens_of_folder

    added, prefix = added_tokens_of_folder(folder), FAMILIES[template].chat.prefix
    if added is None or set(prefix) <= added:
        return
    missing = sorted(set(prefix) - added)
    raise ConfigCheckError(f"config: model.template: {template} starts every conversation with {' '.join(prefix)}, but "
                           f"{folder}/tokenizer.json has no {', '.join(missing)}: the model is not of that family; "
                           f"{template_hint(added.__contains__)}")


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


def folder_config(folder: str) -> dict[str, Any]:
    """A model.path folder's config.json; one that is not a JSON object stops, naming it."""
    path = Path(folder, "config.json")
    try:
        config = json.loads(path.read_text(encoding="utf-8-sig"))
    except ValueError as err:
        raise ConfigCheckError(f"config: model.path: {path} is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ConfigCheckError(f"config: model.path: {path}: not a JSON object")
    return config


def check_positions(model: Mapping[str, Any], settings: Mapping[str, Any], where: str) -> None:
    """A local model folder's positions against a run's lengths (glmtune.config_rules.positions_problem); a
    downloaded model is checked by the tokenize and evaluate jobs, the first to have its config."""
    from glmtune.config_rules import model_positions, positions_problem
    from glmtune.settings import EvaluateSettings, TokenizeSettings

    if model["source"] != "path":
        return
    problem = positions_problem(model_positions(folder_config(model["path"])), TokenizeSettings.from_config(settings["tokenize"]),
                                EvaluateSettings.from_config(settings["evaluate"]).max_new_tokens)
    if problem:
        raise ConfigCheckError(f"config: {where}{problem} (model.path: {model['path']})")


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
