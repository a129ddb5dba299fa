"""The pre-job checks of `model`: the keys its source needs and reads, a local folder's config, weights, tokenizer and
template, tiny head counts, and a folder's positions against a run's lengths. Each failure is a ConfigCheckError
naming the key (glmtune.config_checks runs them in order with the other checks)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from glmtune.config_check_error import ConfigCheckError, check_read
from glmtune.family import is_native_config, model_type_problem
from glmtune.model.weight_files import WeightFilesError, weight_files


# Keys only some model sources read (a `path` under `source: tiny` would train a random model without a word).
MODEL_KEYS_READ_BY_SOURCE = {"path": ("path",), "repo_id": ("huggingface", "modelscope"),
                             "revision": ("huggingface", "modelscope")}


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
        check_tokenizer_files(model["path"], folder_config(model["path"]))  # before the template: a wrong tokenizer
        check_template_fits(model["path"], model["template"])  # would make this one recommend its family
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
    with a bare IndexError (on a GPU, a device-side assert) when an id passed the embedding's rows; a smaller one
    (or a native folder's pad token missing) by the ids config.json gives."""
    from glmtune.family import is_native_config
    from glmtune.model.tokenizer_files import token_ids_of_folder

    native = is_native_config(config)
    files = ("tokenizer.json", "tokenizer.model") if native else ("tokenizer.model",)
    if not any(Path(folder, name).is_file() for name in files):
        raise ConfigCheckError(f"config: model.path: {folder} has no tokenizer ({' or '.join(files)}): save the "
                               "tokenizer with the model (tokenizer.save_pretrained into the same folder)")
    ids = token_ids_of_folder(folder)
    if ids is None:
        return
    rows = config.get("padded_vocab_size") or config.get("vocab_size")
    largest = max(ids.values(), default=None)
    if isinstance(rows, int) and largest is not None and largest >= rows:
        raise ConfigCheckError(f"config: model.path: {folder}/tokenizer.json gives ids up to {largest:,}, but "
                               f"config.json's vocabulary has {rows:,} rows: the tokenizer is another model's (its ids "
                               "would index past the embedding); copy this model's own tokenizer files")
    problem = config_ids_problem(config, ids) or (pad_token_problem(folder, config, ids) if native else None)
    if problem:
        raise ConfigCheckError(f"config: model.path: {folder}/{problem}")


def config_ids_problem(config: Mapping[str, Any], ids: Mapping[str, int]) -> str | None:
    """The special ids config.json gives (eos, pad, bos) must be tokens of tokenizer.json: a smaller tokenizer of
    another model (ChatGLM3's in a GLM-4 folder) passes the vocabulary check and trains the model on foreign ids."""
    known = set(ids.values())
    for key in ("eos_token_id", "pad_token_id", "bos_token_id"):
        given = config.get(key)
        for i in given if isinstance(given, list) else [given]:
            if isinstance(i, int) and i not in known:
                return (f"tokenizer.json has no token of id {i:,}, which config.json gives as its {key} (the "
                        f"tokenizer's ids go up to {max(known, default=0):,}): the tokenizer is another model's; copy "
                        "this model's own tokenizer files")
    return None


def pad_token_problem(folder: str, config: Mapping[str, Any], ids: Mapping[str, int]) -> str | None:
    """A native folder's tokenizer_config.json names its pad token, one of tokenizer.json, of config.json's id:
    without it transformers loads tokenizer.json with no pad token and the train job failed padding the first batch
    ("Could not infer dtype of NoneType"), naming nothing."""
    path = Path(folder, "tokenizer_config.json")
    if not path.is_file():
        return ("tokenizer_config.json is missing: it names the tokenizer's pad and eos tokens, without which training "
                "cannot pad a batch; copy this model's tokenizer_config.json beside its tokenizer.json")
    pad = _named_token(path, "pad_token") or _named_token(Path(folder, "special_tokens_map.json"), "pad_token")
    if pad is None:
        return "tokenizer_config.json names no pad_token (nor does special_tokens_map.json): training cannot pad a batch"
    if pad not in ids:
        return f"tokenizer_config.json's pad_token {pad!r} is no token of tokenizer.json: the files are of two models"
    if isinstance(config.get("pad_token_id"), int) and ids[pad] != config["pad_token_id"]:
        return (f"tokenizer_config.json's pad_token {pad!r} is id {ids[pad]:,} of tokenizer.json, but config.json's "
                f"pad_token_id is {config['pad_token_id']:,}: the tokenizer is another model's; copy this model's own "
                "tokenizer files")
    return None


def _named_token(path: Path, key: str) -> str | None:
    """A special token a tokenizer_config.json / special_tokens_map.json names (a string or {"content": ...})."""
    if not path.is_file():
        return None
    value = folder_json(str(path.parent), path.name).get(key)
    value = value.get("content") if isinstance(value, dict) else value
    return value if isinstance(value, str) and value else None


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


def folder_config(folder: str) -> dict[str, Any]:
    """A model.path folder's config.json; one that is not a JSON object stops, naming it."""
    return folder_json(folder, "config.json")


def folder_json(folder: str, name: str) -> dict[str, Any]:
    """A JSON file of a model.path folder (config.json, tokenizer_config.json); one that is not a JSON object stops,
    naming it."""
    path = Path(folder, name)
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
