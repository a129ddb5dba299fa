"""Named fine-tuning runs: each overrides the config's train / tokenize / evaluate; a grid expands into runs.

Torch-free: the workflow builds its DAG from these (workflow/rules/config.smk, common.smk).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from typing import Any

from glmtune.config_errors import config_problems, format_problems
from glmtune.train.method_registry import METHODS, get_method

# The sections a run may override; everything upstream of tokenizing (data, splits, model) is shared by all runs.
OVERRIDABLE = ("train", "tokenize", "evaluate")
# A run name is a folder name (results/runs/<name>) and a column of the comparison table.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
RESERVED = ("base",)  # the base model's column in the comparison
DEFAULT_TOKENIZED = "default"  # the tokenized set of the config's own tokenize settings


class RunError(ValueError):
    """A run or grid entry the workflow cannot build; the message names the key."""


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `override`'s keys set, mappings merged key by key (lists are replaced whole)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def grid_value_name(value: Any) -> str:
    """A value as it appears in a grid run's name: floats short (0.001), but every digit where fewer would not be the
    value (1.0000001e-3 is not 0.001)."""
    if isinstance(value, float):
        text = format(value, "g")
        text = text if float(text) == value else repr(value)
    else:
        text = str(value).lower() if isinstance(value, bool) else str(value)
    return re.sub(r"[^A-Za-z0-9.-]", "-", text)


def grid_key_names(keys: list[str]) -> dict[str, str]:
    """How each grid key appears in run names: its last part, or where two keys share it (train.batch_size and
    evaluate.batch_size) its whole path, dashed."""
    leaves = [key.split(".")[-1] for key in keys]
    return {key: leaf if leaves.count(leaf) == 1 else key.replace(".", "-") for key, leaf in zip(keys, leaves)}


def expand_grid(grid: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    """Every combination of the grid's values as a run, e.g. {"train.learning_rate": [1e-3, 3e-3], "train.lora.r":
    [8, 64]} -> learning_rate0.001_r8: {"train": {"learning_rate": 0.001, "lora": {"r": 8}}}, ... (grid order).
    Not snakemake.utils.Paramspace: it takes a pandas table and names each combination by a path pattern
    (learning_rate~0.001/r~8); a run here is one folder name whose overrides merge into the typed settings."""
    if not grid:
        return {}
    for key, values in grid.items():
        section = key.split(".")[0]
        if section not in OVERRIDABLE or "." not in key:
            raise RunError(f"config: grid.{key}: a grid key is a dotted setting under {', '.join(OVERRIDABLE)} "
                           "(e.g. train.learning_rate)")
        if not isinstance(values, list) or not values:
            raise RunError(f"config: grid.{key}: give a non-empty list of values")
    runs: dict[str, dict[str, Any]] = {}
    keys = list(grid)
    named = grid_key_names(keys)
    for combination in itertools.product(*(grid[key] for key in keys)):
        override: dict[str, Any] = {}
        for key, value in zip(keys, combination):
            *parents, leaf = key.split(".")
            node = override
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = value
        name = "_".join(f"{named[key]}{grid_value_name(value)}" for key, value in zip(keys, combination))
        if name in runs:  # two values written alike ("a b" and "a-b"): one run would replace the other
            raise RunError(f"config: grid: two combinations are both named {name} ({runs[name]} and {override}): "
                           "give values that differ as text, or name the runs under runs:")
        runs[name] = override
    return runs


def run_overrides(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """config runs plus the grid's runs, names checked; a grid run named like a listed run is an error."""
    runs = dict(config.get("runs") or {})
    for name, override in expand_grid(config.get("grid") or {}).items():
        if name in runs:
            raise RunError(f"config: grid: its run {name} is also named under runs; rename that run")
        runs[name] = override
    if not runs:
        raise RunError("config: runs: no runs; name at least one (e.g. runs: {main: {}} trains the config's train settings)")
    for name, override in runs.items():
        if not RUN_NAME.fullmatch(str(name)) or name in RESERVED:
            raise RunError(f"config: runs.{name}: a run name is a folder name: letters, digits, '.', '_' or '-', "
                           f"starting with a letter or digit, at most 64 characters, and not {', '.join(RESERVED)}")
        unknown = sorted(set(override or {}) - set(OVERRIDABLE))
        if unknown:
            raise RunError(f"config: runs.{name}.{unknown[0]}: unknown key; a run overrides only "
                           f"{', '.join(OVERRIDABLE)} (datasets, split and model are shared by every run)")
    return {name: override or {} for name, override in runs.items()}


def run_settings(config: dict[str, Any], schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each run's train / tokenize / evaluate: the config's, with the run's overrides merged in, checked against the
    schema (every problem named under runs.<name>), the settings it does not read set to null (train_read,
    tokenize_read)."""
    runs, problems = {}, []
    for name, override in run_overrides(config).items():
        merged = {section: deep_merge(config[section], override.get(section) or {}) for section in OVERRIDABLE}
        sections = {key: value for key, value in schema["properties"].items() if key in OVERRIDABLE}
        section_schema = {"type": "object", "properties": sections}
        problems += [f"runs.{name}.{line}" for line in config_problems(merged, section_schema)]
        runs[name] = merged
    if problems:
        raise RunError(format_problems(problems))
    read = {name: {**merged, "train": train_read(merged["train"]), "tokenize": tokenize_read(merged["tokenize"])}
            for name, merged in runs.items()}
    refuse_identical_runs(read, runs)
    return read


def train_read(train: dict[str, Any]) -> dict[str, Any]:
    """The train section with what the run never reads set to null: another method's sub-section (`lora` for a
    P-Tuning v2 or full run, `ptuning` for LoRA), `pack_length` without packing, `num_epochs` when `max_steps` wins.
    Editing those then re-runs nothing (they are not in the train job's params, nor in the run id), and two runs that
    differ in them alone are the same run (refuse_identical_runs)."""
    read = dict(train)
    method_sections = {section for method in METHODS.values() for section in method.reads}
    for section in method_sections - set(get_method(train["method"]).reads):
        read[section] = None
    if not train["packing"]:
        read["pack_length"] = None
    if train["max_steps"] is not None:
        read["num_epochs"] = None
    return read


def evaluation_reads(tokenize: dict[str, Any]) -> dict[str, Any]:
    """The tokenize settings an evaluation reads: its prompts' limit and the share of them that may be cut, not the
    answers' limit in training (max_output_length, null), so editing that re-runs no evaluation of the base."""
    return {**tokenize_read(tokenize), "max_output_length": None}


def tokenize_read(tokenize: dict[str, Any]) -> dict[str, Any]:
    """The tokenize section with the demos' two limits set to null when one cutoff_len replaces them."""
    if tokenize["cutoff_len"] is None:
        return dict(tokenize)
    return {**tokenize, "max_input_length": None, "max_output_length": None}


def refuse_identical_runs(runs: dict[str, dict[str, Any]], written: dict[str, dict[str, Any]]) -> None:
    """Two runs with the same settings would train and evaluate the same model twice (a run is reproducible to the
    digit): hours of GPU time for one row repeated. Most often a grid value equal to the config's own, which the
    default run `main` already trains, or runs that differ only in settings they do not read (`written`: the runs'
    settings before train_read / tokenize_read, to name those)."""
    seen: dict[str, str] = {}
    for name, settings in runs.items():
        key = json.dumps(settings, sort_keys=True, default=str)
        if key in seen:
            first = seen[key]
            unread = differing_keys(written[first], written[name])
            sections = {path.split(".")[0] for path in unread}  # train_read and tokenize_read null unread keys
            because = ([f"train.method {settings['train']['method']}"] if "train" in sections else []) + (
                [f"tokenize.cutoff_len {settings['tokenize']['cutoff_len']}, which replaces the demos' limits"]
                if "tokenize" in sections else [])
            why = (f": they differ only in {', '.join(unread)}, settings that neither run reads "
                   f"({'; '.join(because)}). Leave one out" if unread else
                   ". Leave one out (a grid value equal to the config's own is the default run's; `runs: {}` keeps the "
                   "grid's runs alone)")
            raise RunError(f"config: runs {first} and {name} have the same train, tokenize and evaluate settings: "
                           f"they would train and evaluate the same model twice{why}")
        seen[key] = name


def shared_trainings(runs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each run -> the run that trains its model: the first run with equal train and tokenize settings. Runs that
    differ only in evaluate settings evaluate one model (a run trains reproducibly to the digit), trained once."""
    first: dict[str, str] = {}
    trainer = {}
    for name, settings in runs.items():
        key = json.dumps({section: settings[section] for section in ("train", "tokenize")}, sort_keys=True, default=str)
        trainer[name] = first.setdefault(key, name)
    return trainer


def differing_keys(a: Any, b: Any, path: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested mappings."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [path] if a != b else []
    return [key for name in sorted(set(a) | set(b))
            for key in differing_keys(a.get(name), b.get(name), f"{path}.{name}" if path else name)]


def tokenized_name(tokenize: dict[str, Any]) -> str:
    """The folder of the tokenized data of a run with tokenize settings of its own (as it reads them): runs with
    equal ones share it."""
    digest = hashlib.sha256(json.dumps(tokenize, sort_keys=True).encode()).hexdigest()[:10]
    return f"t{digest}"


def tokenized_sets(config: dict[str, Any], runs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each run's tokenized data folder: `default` (the config's tokenize section) for a run that sets no tokenize
    key of its own, else tokenized_name of its settings. A run's folder follows its own settings alone: naming a
    run's set `default` whenever it equalled the config's moved it when the config's section was edited, and
    re-trained runs whose settings had not changed."""
    overrides = run_overrides(config)
    return {run: tokenized_name(settings["tokenize"]) if overrides[run].get("tokenize") else DEFAULT_TOKENIZED
            for run, settings in runs.items()}


def export_run(config: dict[str, Any], runs: dict[str, Any]) -> str:
    """The run whose export is results/merged_model: export.run, or the first run."""
    chosen = (config.get("export") or {}).get("run")
    if chosen is None:
        return next(iter(runs))
    if chosen not in runs:
        raise RunError(f"config: export.run: {chosen} is not a run; runs are: {', '.join(runs)}")
    return chosen
