"""Save a tokenizer so that other stacks load it too: transformers 5.x, and the 4.4x-4.5x that LLaMA-Factory and
many vLLM deployments pin.

transformers 5 writes `tokenizer_class: TokenizersBackend` (unknown to 4.x), the extra special tokens under a new
key, the chat template only in `chat_template.jinja` (4.4x reads it from tokenizer_config.json), and tokenizers
>= 0.20 writes BPE merges as pairs, which tokenizers 0.19 (transformers 4.40) cannot parse. The files written here
say the same in the older spelling, which both generations read: `PreTrainedTokenizerFast`, both special-token
keys, the template in both places, and merges as "left right" strings (only when no merge part holds a space,
the one case that spelling cannot express).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PORTABLE_CLASS = "PreTrainedTokenizerFast"


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def added_tokens_of_folder(folder: str | Path) -> set[str] | None:
    """The added (special) tokens a folder's fast tokenizer declares in tokenizer.json, read as JSON (no tokenizer
    loaded); None without a tokenizer.json (an original checkpoint, whose tokenizer prepare_model builds)."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return None
    return {token["content"] for token in _read(path).get("added_tokens", [])}


def token_ids_of_folder(folder: str | Path) -> dict[str, int] | None:
    """Every token a folder's tokenizer.json gives with its id (its vocabulary and added tokens), read as JSON (no
    tokenizer loaded); None without one."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return None
    data = _read(path)
    vocab = (data.get("model") or {}).get("vocab") or {}
    if isinstance(vocab, list):  # a Unigram vocab: [piece, score] pairs in id order
        vocab = {entry[0]: i for i, entry in enumerate(vocab) if entry}
    ids = {token: i for token, i in vocab.items() if isinstance(i, int)}
    ids.update({token["content"]: token["id"] for token in data.get("added_tokens", []) if isinstance(token.get("id"), int)})
    return ids


def _portable_config(folder: Path) -> None:
    path = folder / "tokenizer_config.json"
    config = _read(path)
    config.pop("backend", None)
    config["tokenizer_class"] = PORTABLE_CLASS
    extra = config.pop("extra_special_tokens", None)
    if isinstance(extra, list):  # 5.x's name for 4.x's additional_special_tokens
        config.setdefault("additional_special_tokens", extra)
    elif extra:
        config["extra_special_tokens"] = extra
    template = folder / "chat_template.jinja"
    if template.is_file() and "chat_template" not in config:
        config["chat_template"] = template.read_text(encoding="utf-8")
    _write(path, config)


def _portable_merges(folder: Path) -> None:
    path = folder / "tokenizer.json"
    if not path.is_file():
        return
    data = _read(path)
    model = data.get("model", {})
    merges = model.get("merges")
    if model.get("type") != "BPE" or not merges or isinstance(merges[0], str):
        return
    if any(" " in part for pair in merges for part in pair):
        log.warning("%s: a BPE merge holds a space, which the tokenizers 0.19 spelling cannot; kept as pairs "
                    "(loads with tokenizers >= 0.20 only)", path)
        return
    model["merges"] = [f"{left} {right}" for left, right in merges]
    _write(path, data)


def make_portable(folder: str | Path) -> None:
    """Rewrite a saved tokenizer's files in the spelling transformers 4.4x and 5.x both load."""
    folder = Path(folder)
    _portable_config(folder)
    _portable_merges(folder)


def save_tokenizer(tokenizer: Any, folder: str | Path) -> None:
    """`tokenizer.save_pretrained(folder)`, portable to transformers 4.4x as well as 5.x."""
    tokenizer.save_pretrained(str(folder))
    make_portable(folder)
