"""How the config a job runs on is put together from config/config.yaml, --configfile files and --config values.

A --configfile that names `datasets` or `model` is a job of the user's own: its files are layered in order (then
the --config values) over nothing but the schema's defaults, which Snakemake's validate fills in afterwards. The
embedded default job's choices in config/config.yaml (a tiny model's learning rate, step count and length limits)
would be wrong for real data, so they never leak into it. Without such a file (no --configfile, or only presets
like config/presets/*.yaml) the job is the embedded default with the files merged key by key over it; a file
naming `runs` replaces the default's runs.

Snakemake hands --config values over as its CLI parsed them: a nested mapping (`train={max_steps: 5}`) keeps every
value a string. `parse_overrides` reads such strings as YAML where the schema wants something else than the string.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

LOCAL_SOURCES = ("path", "llamafactory")  # files read in place (paths on this machine, no fetch job), not names in a download
OWN_JOB_SECTIONS = ("datasets", "model")  # a file naming one of these is a job of its own
REPLACED_SECTIONS = ("datasets", "model", "runs")  # over the embedded default, a file's own section replaces these
RUN_SECTIONS = ("train", "tokenize", "evaluate")  # what runs.<name> and grid override, checked as the config's
# Sections whose key order means nothing (datasets, runs and a clean step's `replace` are applied in order).
ORDER_FREE = ("train", "tokenize", "evaluate", "export", "split", "model")
ORDER_FREE_IN_DATASET = ("clean", "columns", "tags")
# A decimal number, which PyYAML 1.1 leaves a string when its exponent has no dot before it (1e-4).
NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class LayerError(ValueError):
    """A config that cannot be put together; the message names the key."""


def merge(base: Any, over: Any) -> Any:
    """`over` merged into a copy of `base` key by key (nested mappings too); anything else replaces."""
    if not isinstance(base, Mapping) or not isinstance(over, Mapping):
        return copy.deepcopy(over)
    merged = dict(copy.deepcopy(base))
    for key, value in over.items():
        merged[key] = merge(merged[key], value) if key in merged else copy.deepcopy(value)
    return merged


def is_own_job(files: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a --configfile names datasets or model (presets name neither)."""
    return any(section in user for user in files for section in OWN_JOB_SECTIONS)


def layer_config(default: Mapping[str, Any], files: Sequence[Mapping[str, Any]], overrides: Mapping[str, Any],
                 schema: Mapping[str, Any]) -> dict[str, Any]:
    """The config before validation: the --configfile `files` (in order) over the embedded `default` or, for a job
    of the user's own, over nothing; then the --config `overrides` (parsed, see parse_overrides) key by key."""
    if is_own_job(files):
        config = written_by_user(files, overrides, schema)
    else:
        config = dict(copy.deepcopy(default))
        for section in REPLACED_SECTIONS:
            if any(section in user for user in files):
                config.pop(section, None)  # the default's only: the files' own are merged with each other below
        for user in files:
            config = merge(config, user)
        config = merge(config, parse_overrides(overrides, schema))
    if not config.get("datasets"):
        raise LayerError("config: datasets: no datasets; name at least one (a --configfile that names `datasets` or "
                         "`model` is a job of your own, which starts from no datasets: it does not add to the "
                         "default's)")
    expand_home(config)
    return config


def written_by_user(files: Sequence[Mapping[str, Any]], overrides: Mapping[str, Any],
                    schema: Mapping[str, Any]) -> dict[str, Any]:
    """What the user wrote: the --configfile files merged in order, then the --config overrides (no default)."""
    written: dict[str, Any] = {}
    for user in files:
        written = merge(written, user)
    return merge(written, parse_overrides(overrides, schema))


DEMO_LIMITS = ("max_input_length", "max_output_length")


def replaced_limits(config: Mapping[str, Any], written: Mapping[str, Any]) -> list[str]:
    """Warnings, one a section, where a cutoff_len replaces demo limits the user wrote too (`config`: layered, before
    validation; `written`: the user's files and --config merged). The validated config cannot tell: the schema fills
    both limits in."""
    def tokenize_of(mapping: Any) -> Mapping[str, Any]:
        return (mapping or {}).get("tokenize") or {}

    top, top_written = tokenize_of(config), tokenize_of(written)
    scopes = [("", top.get("cutoff_len"), [key for key in DEMO_LIMITS if key in top_written])]
    for name, run in (config.get("runs") or {}).items():
        own, own_written = tokenize_of(run), tokenize_of((written.get("runs") or {}).get(name))
        keys = [key for key in DEMO_LIMITS if key in own_written or ("cutoff_len" in own and key in top_written)]
        if "cutoff_len" in own or any(key in own_written for key in DEMO_LIMITS):
            scopes.append((f"runs.{name}.", own.get("cutoff_len", top.get("cutoff_len")), keys))
    grid_values = [value for value in (config.get("grid") or {}).get("tokenize.cutoff_len") or () if value is not None]
    if grid_values:  # the grid's runs, built later (glmtune.experiments), each with one of them
        scopes.append(("grid.", ", ".join(map(str, grid_values)), [key for key in DEMO_LIMITS if key in top_written]))
    return [f"{where}tokenize.cutoff_len {cutoff} replaces the {' and '.join(keys)} also written: a training sample "
            f"keeps its first {cutoff} tokens and an evaluation prompt its first {cutoff}; remove "
            f"{' and '.join(keys)}, or write cutoff_len: null to use them"
            for where, cutoff, keys in scopes if cutoff is not None and keys]


def expand_home(config: dict[str, Any]) -> None:
    """A leading ~ in a path the config gives (local dataset files, dataset_info, model.path, train.deepspeed, a run's
    deepspeed) is the user's home, as in a shell: expanded in place, before anything reads the path."""
    def home(value: Any) -> Any:
        if isinstance(value, list):  # a list of files read as one
            return [home(item) for item in value]
        return os.path.expanduser(value) if isinstance(value, str) else value

    for dataset in config.get("datasets", {}).values():
        if isinstance(dataset, dict) and dataset.get("source") in LOCAL_SOURCES:
            if isinstance(dataset.get("files"), dict):
                dataset["files"] = {split: home(file) for split, file in dataset["files"].items()}
            if "dataset_info" in dataset:
                dataset["dataset_info"] = home(dataset["dataset_info"])
    if isinstance(config.get("model"), dict) and "path" in config["model"]:
        config["model"]["path"] = home(config["model"]["path"])
    for train in [config.get("train"), *(run.get("train") for run in (config.get("runs") or {}).values()
                                          if isinstance(run, dict))]:
        if isinstance(train, dict) and "deepspeed" in train:
            train["deepspeed"] = home(train["deepspeed"])


def node_at(schema: Mapping[str, Any], path: Sequence[str]) -> Mapping[str, Any]:
    """The schema of the value at `path` ({} where the schema says nothing): runs.<name>.train and the values of
    grid.<dotted.key> take the config's own train / tokenize / evaluate schema."""
    path = list(path)
    if len(path) >= 3 and path[0] == "runs" and path[2] in RUN_SECTIONS:
        path = path[2:]
    elif len(path) >= 2 and path[0] == "grid":
        return {"type": "array", "items": node_at(schema, str(path[1]).split("."))} if len(path) == 2 else \
            node_at(schema, str(path[1]).split("."))
    node: Any = schema
    for key in path:
        if not isinstance(node, Mapping):
            return {}
        if node.get("type") == "array" or "items" in node:
            node = node.get("items", {})
        elif key in node.get("properties", {}):
            node = node["properties"][key]
        elif isinstance(node.get("additionalProperties"), Mapping):
            node = node["additionalProperties"]
        else:
            return {}
    return node if isinstance(node, Mapping) else {}


def parse_value(text: str, node: Mapping[str, Any]) -> Any:
    """A --config string as the schema wants it: read as YAML ("5" -> 5, "true" -> True, "null" -> None; "1e-4",
    which PyYAML leaves a string, as a number) where that value is valid, else kept where the string itself is (a
    name, a revision, `auto`); anything else is left to the schema check, which names the key."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, str) and NUMBER.match(value.strip()):
        number = float(value)  # 1e4 for an integer key is the integer 10000
        value = int(number) if number.is_integer() and "." not in value else number
    if not node:
        return value
    from jsonschema import Draft202012Validator  # here: the benchmarks layer configs where only the CLI runs

    validator = Draft202012Validator(dict(node))
    return text if not validator.is_valid(value) and validator.is_valid(text) else value


def parse_overrides(overrides: Any, schema: Mapping[str, Any], path: tuple[str, ...] = ()) -> Any:
    """The --config values with the strings inside mappings and lists read as the schema wants them."""
    if isinstance(overrides, Mapping):
        return {key: parse_overrides(value, schema, (*path, str(key))) for key, value in overrides.items()}
    if isinstance(overrides, list):
        return [parse_overrides(value, schema, (*path, "0")) for value in overrides]
    if isinstance(overrides, str) and len(path) > 1:  # Snakemake types top-level values itself
        return parse_value(overrides, node_at(schema, path))
    return overrides


def whole_numbers(config: Any, schema: Mapping[str, Any], path: tuple[str, ...] = ()) -> Any:
    """`config` with every float that is a whole number made an int where the schema wants an integer: JSON Schema
    takes 2048.0 as the integer it equals (YAML reads `cutoff_len: 2048.0`, `1.0e3` as floats), but a float slice
    bound, batch size or step count fails deep inside a job."""
    if isinstance(config, Mapping):
        return {key: whole_numbers(value, schema, (*path, str(key))) for key, value in config.items()}
    if isinstance(config, list):
        return [whole_numbers(value, schema, (*path, "0")) for value in config]
    if isinstance(config, float) and config.is_integer() and _wants_integer(node_at(schema, path)):
        return int(config)
    return config


def _wants_integer(node: Mapping[str, Any]) -> bool:
    """Whether the schema node allows an integer and no other number."""
    kinds = [node.get("type")] + [branch.get("type") for branch in node.get("anyOf", []) + node.get("oneOf", [])]
    names = {name for kind in kinds for name in ([kind] if isinstance(kind, str) else kind or [])}
    return "integer" in names and "number" not in names


def fill_defaults(node: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """`given` with every missing key of the object schema `node` set to its default, nested objects too (as
    Snakemake's validate fills them); a nested dict in `given` is filled the same way, so it may be partial."""
    filled = copy.deepcopy(dict(given))
    for key, sub in node.get("properties", {}).items():
        if key not in filled and "default" in sub:
            filled[key] = copy.deepcopy(sub["default"])
        if sub.get("type") == "object" and isinstance(filled.get(key), dict):
            filled[key] = fill_defaults(sub, filled[key])
    return filled


def sorted_keys(value: Any, keep: tuple[str, ...] = ()) -> Any:
    """`value` with every mapping's keys in sorted order, except the values under the keys in `keep`."""
    if isinstance(value, Mapping):
        return {key: value[key] if key in keep else sorted_keys(value[key], keep) for key in sorted(value)}
    return value


def sort_order_free(config: dict[str, Any]) -> None:
    """The validated config with the keys of order-free sections sorted, in place. Snakemake compares a job's params
    by their repr, where a mapping's key order shows: the order a user writes keys in, or a default written out
    (it comes first, not where the schema fills it in), would otherwise re-run every job downstream."""
    for section in ORDER_FREE:
        config[section] = sorted_keys(config[section])
    for dataset in config["datasets"].values():
        for key in ORDER_FREE_IN_DATASET:
            if isinstance(dataset.get(key), Mapping):
                dataset[key] = sorted_keys(dataset[key], keep=("replace",))
        if isinstance(dataset.get("files"), Mapping):  # a list of files is read in one order however written (the
            # records' order decides which duplicate stays and the split; Snakemake sees no change in a reordered list):
            # their absolute paths' order, so one spelled absolute, relative or through `..` keeps its place
            dataset["files"] = {split: sorted(entry, key=os.path.abspath) if isinstance(entry, list) else entry
                                for split, entry in dataset["files"].items()}


def profile_words(argv: Sequence[str]) -> list[str]:
    """The profiles a snakemake command line names (`--profile slurm`, `--workflow-profile=x`), to be kept in the
    commands messages suggest: without them a SLURM user's suggested command would run its jobs where it is typed."""
    words: list[str] = []
    for at, arg in enumerate(argv):
        for option in ("--profile", "--workflow-profile"):
            if arg == option and at + 1 < len(argv):
                words += [option, argv[at + 1]]
            elif arg.startswith(option + "="):
                words += [option, arg.split("=", 1)[1]]
    return words


def job_command(targets: Sequence[str], configfiles: Sequence[str | Path], config_args: Sequence[str] = (),
                cwd: str | Path = ".", snakefile: str | Path | None = None, profiles: Sequence[str] = ()) -> str:
    """The snakemake command that builds `targets` in this same job: its --configfile files (relative to `cwd` where
    inside it) and --config values, as a message can suggest it. Targets come first: --configfile and --config take
    every word after them. A `snakefile` snakemake would not find from `cwd` (a job folder of its own) is given with
    -s, and the checkout's profiles/default with it, as the README runs such a job; `profiles`: the command line's own
    profile options (profile_words), kept in place of that default."""
    files = [os.path.relpath(f, cwd) if Path(f).resolve().is_relative_to(Path(cwd).resolve()) else str(f)
             for f in configfiles]
    words = ["snakemake"]
    found = [Path(cwd, name).resolve() for name in ("Snakefile", "workflow/Snakefile", "snakefile", "workflow/snakefile")]
    if snakefile is not None and Path(snakefile).resolve() not in found:
        words += ["-s", str(snakefile)]
        if "--workflow-profile" not in profiles and \
                (profile := Path(snakefile).resolve().parent.parent / "profiles" / "default").is_dir():
            words += ["--workflow-profile", str(profile)]
    words += profiles
    words += ["--cores", "8", *targets]
    if files:
        words += ["--configfile", *files]
    if config_args:
        words += ["--config", *config_args]
    return shlex.join(words)
