"""The opt-in path that runs an original checkpoint's own modeling code (`model.trust_remote_code: true`).

By default fetch converts original ChatGLM3 / GLM-4 checkpoints to native transformers folders and nothing runs
remote code. With the flag, the prepared folder keeps the original weights, config.json (its `auto_map`) and
modeling *.py files, linked, and every model load passes `trust_remote_code=True`.

The tokenizer is the one exception: the original `tokenization_chatglm.py` is remote code too and breaks on
new transformers, while our fast tokenizer (glmtune.model.tokenizers, built from the shipped tokenizer.model)
gives the same ids. So the folder gets that tokenizer, saved so that transformers 4.40 loads it as well as 5.x,
and none of the original tokenizer files: only the modeling runs remote code.

The folder records the opt-in (MARKER), and export carries it, with the *.py files and `auto_map`, into the
merged folder; but the marker never grants it. Only the user does: model.trust_remote_code in the workflow, or
`glmtune infer --trust-remote-code`. A folder someone hands you must not decide to run its own code.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from glmtune.io import atomic_path
from glmtune.model.tokenizer_files import save_tokenizer

MARKER = "glmtune_remote_code.json"
# The original tokenizer's files: ours replaces them (see the module docstring).
_ORIGINAL_TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                             "added_tokens.json")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8-sig"))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


class RemoteCodeError(ValueError):
    """A model folder loads only by running its own Python code, and the user did not ask for that."""


def recorded_trust(folder: str | Path) -> bool:
    """True when `folder` was prepared (or exported) with model.trust_remote_code: true. A record, not a grant."""
    return (Path(folder) / MARKER).is_file()


def check_remote_code(folder: str | Path, trust_remote_code: bool) -> None:
    """Stop before loading `folder` when only its own code (config.json auto_map) can load it and the user did
    not ask to run it. A folder whose model_type transformers knows loads natively (the auto_map is ignored)."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        return
    if trust_remote_code:
        if missing := missing_code_files(folder):
            raise RemoteCodeError(
                f"{folder}: the code its auto_map names is not in the folder ({', '.join(missing)}): with remote code the "
                "model runs that code; copy the checkpoint's *.py files beside its config.json (a folder with only "
                "config and tokenizer files cannot run it)")
        return
    config = _read_json(config_path)
    if not config.get("auto_map") or config.get("model_type") in CONFIG_MAPPING:
        return
    recorded = (f"; its {MARKER} says it was prepared with model.trust_remote_code: true, which records that choice "
                f"but does not make it for you") if recorded_trust(folder) else ""
    raise RemoteCodeError(
        f"{folder}: this model loads only by running the Python code in its folder (config.json auto_map; "
        f"model_type {config.get('model_type')!r} has no native transformers class){recorded}. glmtune runs a "
        f"folder's code only when you ask: pass --trust-remote-code to `glmtune infer`, or set "
        f"model.trust_remote_code: true in the workflow config; or fetch the original checkpoint without it "
        f"(it is then converted to a native folder)")


def missing_code_files(folder: str | Path) -> list[str]:
    """The *.py files the auto_map of config.json and tokenizer_config.json name that the folder lacks (a hub copy's
    "repo--module.Class" is fetched from that repo, not missing)."""
    names: set[str] = set()
    for file in ("config.json", "tokenizer_config.json"):
        path = Path(folder) / file
        auto_map = (_read_json(path).get("auto_map") or {}) if path.is_file() else {}
        for reference in auto_map.values() if isinstance(auto_map, dict) else ():
            for item in reference if isinstance(reference, list) else [reference]:
                if isinstance(item, str) and "--" not in item:
                    names.add(item.rsplit(".", 1)[0] + ".py")
    return sorted(name for name in names if not (Path(folder) / name).is_file())


def modeling_file(folder: str | Path) -> Path | None:
    """The *.py file config.json's auto_map names for AutoModelForCausalLM (or AutoModel), if it is in the folder."""
    auto_map = _read_json(Path(folder) / "config.json").get("auto_map") or {}
    reference = auto_map.get("AutoModelForCausalLM") or auto_map.get("AutoModel")
    if not isinstance(reference, str):
        return None
    module = reference.split("--")[-1].rsplit(".", 1)[0]  # "repo--modeling_chatglm.Class" on hub copies
    path = Path(folder) / f"{module}.py"
    return path if path.is_file() else None


def prepare_folder(source: str | Path, out_dir: str | Path, tokenizer: Any) -> Path:
    """`out_dir` as the original folder `source`, linked file by file, with `tokenizer` (ours) and the marker.

    Nothing is converted: weights and the modeling *.py files are symlinks to `source`; config.json is copied with
    its auto_map, less any AutoTokenizer entry. The original tokenizer files and `tokenization_*.py` are left out,
    so `AutoTokenizer` finds only ours. `out_dir` appears only when complete.
    """
    source, out_dir = Path(source).resolve(), Path(out_dir)
    if out_dir.is_symlink():
        out_dir.unlink()  # a link from an earlier fetch without the flag
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for item in sorted(source.iterdir()):
            skipped = item.name in _ORIGINAL_TOKENIZER_FILES or item.name.startswith((".", "tokenization_"))
            if not skipped and item.name != "config.json":
                os.symlink(item, tmp / item.name, target_is_directory=item.is_dir())
        config = _read_json(source / "config.json")
        config.get("auto_map", {}).pop("AutoTokenizer", None)
        _write_json(tmp / "config.json", config)
        save_tokenizer(tokenizer, tmp)
        _write_json(tmp / MARKER, {
            "trust_remote_code": True, "original": str(source),
            "why": "model.trust_remote_code: true: the modeling code of the original checkpoint runs as it is "
                   "(files linked from 'original'); the tokenizer is glmtune's fast tokenizer built from its tokenizer.model",
        })
    return out_dir


def carry_remote_code(model_dir: str | Path, out_dir: str | Path) -> None:
    """Make a folder saved from a remote-code model load again like `model_dir`: its *.py files, auto_map, marker.

    `save_pretrained` copies the modeling file and its relative imports already; this also brings the files it
    imports lazily (e.g. ChatGLM3's quantization.py) and the auto_map entries of the other Auto classes.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    for path in model_dir.glob("*.py"):
        if not (out_dir / path.name).exists():
            shutil.copyfile(path, out_dir / path.name)
    original_map = _read_json(model_dir / "config.json").get("auto_map") or {}
    config = _read_json(out_dir / "config.json")
    config["auto_map"] = {**original_map, **(config.get("auto_map") or {})}
    _write_json(out_dir / "config.json", config)
    if recorded_trust(model_dir):
        shutil.copyfile(model_dir / MARKER, out_dir / MARKER)
