"""Config errors a person can read: one short line per problem, naming the key path, the bad value, what is
allowed, and the closest valid key for a typo.

Snakemake's own `validate` reports the first error with the whole schema and config around it (hundreds of
lines); `config_problems` checks against the same schema first, so a mistake costs a few lines.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from glmtune.config_layers import NUMBER

_TYPE_NAMES = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
               "object": "a mapping", "array": "a list", "null": "null"}


def _path(error: ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "(top level)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected_type(kinds: str | list[str]) -> str:
    kinds = [kinds] if isinstance(kinds, str) else kinds
    return " or ".join(_TYPE_NAMES.get(kind, kind) for kind in kinds)


def _number_hint(value: Any, kinds: Any) -> str:
    """Why a number reached the config as a string: PyYAML (YAML 1.1) reads an exponent as a number only with a dot
    before it and a sign after the e (1.0e-4, 1.0e+2: 1e-4 and 1.0e2 are strings), or it was quoted."""
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    if not (isinstance(value, str) and NUMBER.match(value.strip()) and {"number", "integer"} & set(kinds)):
        return ""
    mantissa, _, exponent = value.strip().lower().partition("e")
    if exponent and ("." not in mantissa or exponent[0] not in "+-"):
        written = (mantissa if "." in mantissa else f"{mantissa}.0") + "e" + (exponent if exponent[0] in "+-" else f"+{exponent}")
        return f" (YAML reads {value.strip()} as a string: write {written})"
    return f" (a number in quotes is a string: write {value.strip()} without quotes)"


# Keys of LLaMA-Factory's training YAML and of the ChatGLM3 / GLM-4 finetune demos' configs (Hugging Face
# TrainingArguments and peft names) -> where this config says the same, for a user bringing a config over.
OTHER_TOOLS_KEYS = {
    "num_train_epochs": "train.num_epochs", "per_device_train_batch_size": "train.batch_size",
    "per_device_eval_batch_size": "evaluate.batch_size", "lr_scheduler_type": "train.lr_scheduler",
    "lora_target": "train.lora.target_modules", "lora_rank": "train.lora.r", "lora_alpha": "train.lora.alpha",
    "lora_dropout": "train.lora.dropout", "finetuning_type": "train.method", "pre_seq_len": "train.ptuning.num_virtual_tokens",
    "model_name_or_path": "model.path (with model.source: path) or model.repo_id", "dataset": "datasets",
    "dataset_dir": "datasets.<name>.dataset_info", "val_size": "split.validation_ratio", "bf16": "train.precision",
    "fp16": "train.precision", "training_args": "train", "peft_config": "train.lora", "data_config": "datasets",
    "max_new_tokens": "evaluate.max_new_tokens", "template": "model.template",
    "quantization_bit": "train.method (qlora: a 4-bit NF4 base)", "max_source_length": "tokenize.max_input_length",
    "max_target_length": "tokenize.max_output_length", "stage": "train.method (supervised fine-tuning only: one of its methods)",
}


# Generation settings of transformers' generate(): the evaluation decodes greedily, as the demos' evaluation does, so
# that a score compares models, not draws.
SAMPLING_KEYS = ("do_sample", "temperature", "top_p", "top_k", "num_beams", "repetition_penalty", "typical_p")


# Split names other tools use -> ours (a dataset's `files` keys).
OTHER_SPLIT_NAMES = {"dev": "test (the demos evaluate on dev.json: `test: dev.json`) or validation",
                     "val": "validation", "valid": "validation", "eval": "validation", "training": "train",
                     "testing": "test", "full": "all"}


def key_paths(schema: dict[str, Any], at: str = "") -> list[str]:
    """Every key the schema names, dotted (a mapping of names, such as datasets, as `<name>`)."""
    paths = []
    for key, sub in schema.get("properties", {}).items():
        paths.append(f"{at}{key}")
        paths += key_paths(sub, f"{at}{key}.")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and extra.get("properties"):
        paths += key_paths(extra, f"{at}<name>.")
    return paths


def _same_key_elsewhere(key: str, paths: list[str]) -> list[str]:
    """The schema's keys named `key` in other sections, or else the one closest to it."""
    names = [path.rsplit(".", 1)[-1] for path in paths]
    wanted = [key] if key in names else difflib.get_close_matches(key, names, n=1, cutoff=0.8)
    return [path for path, name in zip(paths, names) if name in wanted]


def _unknown_keys(error: ValidationError, schema: dict[str, Any]) -> list[str]:
    """One line per key the schema does not know there: the close key at that level (a typo), the key of another
    tool's config, or the key of that name (or close to it) elsewhere (`learning_rate` at the top is train's)."""
    known = list(error.schema.get("properties", {}))
    where = _path(error)
    prefix = "" if where == "(top level)" else f"{where}."
    everywhere = key_paths(schema)
    lines = []
    for key in sorted(set(error.instance) - set(known), key=str):
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        if where.endswith(".files") and key in OTHER_SPLIT_NAMES:
            hint = f"the splits are {', '.join(known)}: {key} is {OTHER_SPLIT_NAMES[key]} here"
        elif key in OTHER_TOOLS_KEYS:  # before a close key: `template` is not `evaluate`, `lora_rank` not `lora`
            hint = f"{key} (LLaMA-Factory, the GLM finetune demos) is {OTHER_TOOLS_KEYS[key]} here"
        elif key in SAMPLING_KEYS:  # `do_sample` is not `max_samples`
            hint = ("the evaluation decodes greedily (as the demos' evaluation), so that scores compare models, not "
                    "samples; it has no sampling or beam settings (glmtune infer neither)")
        elif close:
            hint = f"did you mean '{prefix}{close[0]}'?"
        elif elsewhere := _same_key_elsewhere(str(key), everywhere):
            hint = "did you mean " + " or ".join(f"'{path}'" for path in elsewhere[:3]) + "?"
        else:
            hint = f"known keys: {', '.join(known)}"
        lines.append(f"{prefix}{key}: unknown key; {hint}")
    return lines


def _describe(error: ValidationError, schema: dict[str, Any]) -> list[str]:
    """One line per problem in `error` (an unknown-keys error may name several keys)."""
    where, value = _path(error), error.instance
    if error.validator == "additionalProperties" and isinstance(value, dict):
        return _unknown_keys(error, schema) or [f"{where}: {error.message}"]
    if error.validator == "enum":
        allowed = ", ".join(map(str, error.validator_value))
        close = difflib.get_close_matches(str(value), list(map(str, error.validator_value)), n=1, cutoff=0.6)
        return [f"{where}: {_short(value)} is not allowed; use one of {allowed}" + (f" (did you mean {close[0]}?)" if close else "")]
    if error.validator == "type":
        return [f"{where}: {_short(value)} should be {_expected_type(error.validator_value)}"
                + _number_hint(value, error.validator_value)]
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        bound = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[error.validator]
        return [f"{where}: {_short(value)} should be {bound} {error.validator_value}"]
    if error.validator == "required":
        return [f"{where}: {error.message}"]
    if error.validator == "anyOf":  # e.g. batch_size: an integer or auto
        options = " or ".join(_option(sub) for sub in error.validator_value)
        kinds = [sub.get("type", "") for sub in error.validator_value if isinstance(sub.get("type", ""), str)]
        return [f"{where}: {_short(value)} is not valid; expected {options}" + _number_hint(value, kinds)]
    if error.validator == "pattern" and error.schema.get("description"):
        return [f"{where}: {_short(value)} is not {error.schema['description']}"]
    return [f"{where}: {error.message}"]


def _option(schema: dict[str, Any]) -> str:
    if "const" in schema:
        return repr(schema["const"])
    text = _expected_type(schema.get("type", "any"))
    if "minimum" in schema:
        text += f" >= {schema['minimum']}"
    return text


def _leaves(errors: Iterable[ValidationError]) -> Iterable[ValidationError]:
    """The deepest errors: for a bad name pattern inside propertyNames, the inner error says which name."""
    for error in errors:
        if error.validator == "propertyNames" and error.context:
            for inner in error.context:
                inner.path.extendleft(reversed(list(error.absolute_path)))
                yield inner
        else:
            yield error


def key_problems(value: Any, at: str = "") -> list[str]:
    """Keys that YAML read as something else than text (a dataset named 2024, a run named `on`, `null:`): every key
    names a folder, a setting or a text, and which text a number or a boolean was written as cannot be told (007,
    7 and 0x7 are all 7; yes, on and true all True)."""
    if isinstance(value, list):
        return [line for index, item in enumerate(value) for line in key_problems(item, f"{at}[{index}]")]
    if not isinstance(value, dict):
        return []
    lines = []
    for key, item in value.items():
        if not isinstance(key, str):
            kind = ("a boolean (as it reads yes, no, on, off, true, false)" if isinstance(key, bool) else
                    "null (as it reads ~ and null)" if key is None else "a number")
            lines.append(f"{at + '.' if at else ''}{key}: a key YAML reads as {kind}, not as a name: write it in quotes"
                         + ("" if isinstance(key, bool) or key is None else f", '{key}'"))
        lines += key_problems(item, f"{at}.{key}" if at else str(key))
    return lines


def nonfinite_problems(value: Any, at: str = "") -> list[str]:
    """Values YAML reads as not-a-number or infinity (.nan, .inf, -.Inf): no setting takes one, and the schema's
    bounds cannot refuse them (every comparison with NaN is false; infinity passes a lower bound), so a learning rate
    or a reject ratio of .nan would reach the jobs."""
    if isinstance(value, list):
        return [line for index, item in enumerate(value) for line in nonfinite_problems(item, f"{at}[{index}]")]
    if isinstance(value, dict):
        return [line for key, item in value.items() for line in nonfinite_problems(item, f"{at}.{key}" if at else str(key))]
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{at}: {value} (YAML reads .nan and .inf as not-a-number and infinity) is not a value any setting "
                "takes: write a finite number"]
    return []


def config_problems(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Every problem of `config` against `schema`, one readable line each, in the config's order; keys that are
    not text first, then values that are no finite number where a number is written."""
    if keys := key_problems(config):
        return keys
    if nonfinite := nonfinite_problems(config):
        return nonfinite
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    lines: list[str] = []
    for error in _leaves(errors):
        for line in _describe(error, schema):
            if line not in lines:
                lines.append(line)
    return lines


def format_problems(lines: list[str], limit: int = 8) -> str:
    """The message for WorkflowError: at most `limit` problems, then a count of the rest."""
    shown = [f"  - {line}" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"  ... and {len(lines) - limit} more")
    return "config: " + ("1 problem" if len(lines) == 1 else f"{len(lines)} problems") + " (workflow/schemas/config.schema.yaml)\n" + "\n".join(shown)
