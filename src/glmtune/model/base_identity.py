"""Which base model an adapter was trained on: recorded beside the adapter, checked before it is put on a base.

A LoRA or P-Tuning v2 adapter is a delta against one set of base weights. On any other base (a tiny model that
another config rebuilt at the same path, another checkpoint passed with --base-model) it generates garbage and
nothing fails. So training writes `base_model.json` into the adapter folder (`record_base`): the base's path and a
fingerprint of it; glmtune.model.loading checks it (`check_base`) every time an adapter is put on a base, which is
how inference, evaluation and export load adapters, and refuses a different base, naming both. An adapter
trained before glmtune wrote the record loads with a warning. A full SFT run saves a whole model: no base, no record.

The fingerprint is cheap (milliseconds for a 9B model) but real: config.json and the tokenizer files (not the chat
template: TEMPLATE_FILES) are hashed whole; each weight file by its size and the sha256 of its first and last MiB (the safetensors header with every
tensor's name, shape and offset, and the values at the end), as the checkpoint manifest hashes large files.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from glmtune.io import file_sha256

log = logging.getLogger(__name__)
RECORD = "base_model.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Files that decide what the token ids mean, beside tokenizer*.* (tokenizer.json, tokenizer.model, tokenizer_config.json).
TOKENIZER_FILES = ("special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "vocab.json", "merges.txt")
HEAD_AND_TAIL = 2 << 20  # weight files above this are hashed by their first and last MiB
# A chat template lays out text, never what the weights or the token ids are: glmtune encodes with the family's
# layout whatever the folder holds, and the prepared folder of a model given as a folder may carry the family's in
# place of the user's (glmtune.model.folder_template). Left out of the fingerprint, so that folder and the user's
# are one base.
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


class BaseModelMismatch(ValueError):
    """The base model given for an adapter is not the one it was trained on."""


def identifying_files(folder: str | Path) -> list[Path]:
    """The files of a model folder that decide what it computes: config.json, tokenizer files, weight files (their
    indexes included); not a README, a licence or a picture. Sorted; none for a folder that is not there."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.is_file() and _identifies(path.name))


def _identifies(name: str) -> bool:
    return (name.endswith(WEIGHT_SUFFIXES) or name.endswith(tuple(f"{suffix}.index.json" for suffix in WEIGHT_SUFFIXES))
            or name == "config.json" or name.startswith("tokenizer") or name in TOKENIZER_FILES)


def folder_inputs(folder: str | Path, trust_remote_code: bool) -> list[str]:
    """What prepare_model takes from a local model folder: its identifying files; the generation config of a folder
    it converts (the converted folder's is made from it; a native folder's is linked, and only the export reads it:
    export_generation_config); with its own code running, its `*.py`. config.json even when missing, for Snakemake to
    name."""
    folder = Path(folder)
    extra = sorted(folder.glob("*.py")) if trust_remote_code else []
    if trust_remote_code or not _native(folder):
        extra.append(folder / "generation_config.json")
    return sorted(map(str, {folder / "config.json", *identifying_files(folder), *(path for path in extra if path.is_file())}))


def export_generation_config(folder: str | Path, trust_remote_code: bool) -> list[str]:
    """The export's own input from a local native model folder: its generation_config.json, which only the merged
    model carries (evaluation decodes with its own settings: glmtune.evaluate.generation), so editing it re-runs the
    export and not training."""
    path = Path(folder) / "generation_config.json"
    return [str(path)] if not trust_remote_code and path.is_file() and _native(Path(folder)) else []


def _native(folder: Path) -> bool:
    from glmtune.family import is_native_config

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return False  # the config check names a folder without a readable config.json
    return isinstance(config, dict) and is_native_config(config)


def fingerprint_files(base_dir: str | Path) -> dict[str, str]:
    """File name -> hash of what identifies a base model folder (identifying_files): weight files by size, head and
    tail; the others whole."""
    folder = Path(base_dir)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json)")
    entries: dict[str, str] = {}
    for path in identifying_files(folder):
        if path.name.endswith(WEIGHT_SUFFIXES):
            entries[path.name] = f"{path.stat().st_size}:{file_sha256(path, HEAD_AND_TAIL)}"
        elif not path.name.endswith(".index.json") and path.name not in TEMPLATE_FILES:  # an index: the shards' hashes
            entries[path.name] = file_sha256(path, 1 << 62)  # small files: whole
    return entries


def fingerprint(files: dict[str, str]) -> str:
    """One sha256 over the per-file hashes of `fingerprint_files`."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode("utf-8")).hexdigest()


def recorded_base(adapter_dir: str | Path) -> dict[str, Any] | None:
    """The adapter's base_model.json (path, fingerprint, files), or None for an adapter trained without one."""
    path = Path(adapter_dir) / RECORD
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def record_base(adapter_dir: str | Path) -> None:
    """Write base_model.json into a just-saved adapter folder, for the base its adapter_config.json names.

    A folder without adapter_config.json is a whole model (full SFT): nothing to record.
    """
    from glmtune.io import write_json

    adapter_dir = Path(adapter_dir)
    config = adapter_dir / "adapter_config.json"
    if not config.is_file():
        return
    base = Path(json.loads(config.read_text(encoding="utf-8"))["base_model_name_or_path"]).resolve()
    files = fingerprint_files(base)
    write_json(adapter_dir / RECORD, {"path": str(base), "fingerprint": fingerprint(files), "files": files})


_UNCHECKABLE_SAID: set[tuple[str, str]] = set()  # (adapter, base) pairs already warned of in this process


def check_base(adapter_dir: str | Path, base_dir: str | Path) -> None:
    """Raise BaseModelMismatch unless `base_dir` is the base `adapter_dir` was trained on (per its base_model.json).

    The message names both folders and both fingerprints, and which files differ. Without a record: a warning.
    """
    record = recorded_base(adapter_dir)
    if record is None:
        if (str(adapter_dir), str(base_dir)) in _UNCHECKABLE_SAID:  # infer checks before loading, and loading again
            return
        _UNCHECKABLE_SAID.add((str(adapter_dir), str(base_dir)))
        log.warning("%s has no %s (a Trainer checkpoint, or an adapter trained before glmtune recorded the base): "
                    "cannot check that %s is the base model it was trained on; on any other base it generates garbage",
                    adapter_dir, RECORD, base_dir)
        return
    files = fingerprint_files(base_dir)
    found = fingerprint(files)
    recorded = {name: value for name, value in record["files"].items() if name not in TEMPLATE_FILES}
    if found == record["fingerprint"] or files == recorded:  # a record from before templates were left out
        return
    trained_on, given = record["path"], str(Path(base_dir).resolve())
    changed = sorted(name for name in set(files) | set(recorded) if files.get(name) != recorded.get(name))
    what = (f"{given} now holds a different model (rebuilt or replaced since training?)" if given == trained_on
            else f"the base model given, {given}, is a different model")
    raise BaseModelMismatch(
        f"{adapter_dir} was trained on the base model {trained_on} (fingerprint {record['fingerprint'][:16]}), but "
        f"{what} (fingerprint {found[:16]}; differing files: {', '.join(changed)}): on other weights the adapter "
        "generates garbage, and the files that say what the weights and token ids are differ (a copy must hold the "
        "same files: the same weights re-saved into other shards differ too). Pass --base-model with the model it "
        "was trained on, or train again on this one."
    )
