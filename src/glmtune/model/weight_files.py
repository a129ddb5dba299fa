"""The weight files of a model folder, checked without loading a tensor (the config check runs this before any job).

A folder with a config but no weights (a tokenizer copy), an index naming shards that are not there, or a
safetensors file cut short (an interrupted download or copy) would otherwise fail only when a job loads the model,
after the data stages ran. Each safetensors header is read (8 bytes of length, then JSON) and the file must be as
long as its tensors say: a cut file is named with both sizes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

INDEXES = (("model.safetensors.index.json", "*.safetensors"), ("pytorch_model.bin.index.json", "pytorch_model*.bin"))
SINGLE_FILES = {"model.safetensors.index.json": "model.safetensors", "pytorch_model.bin.index.json": "pytorch_model.bin"}
MAX_HEADER = 100 * 2**20  # the safetensors format's own limit


class WeightFilesError(ValueError):
    """A model folder whose weights cannot be loaded, with the file and the reason."""


def weight_files(folder: str | Path, *, as_transformers_loads: bool = False) -> list[Path]:
    """The folder's weight shards, safetensors preferred, in index order; each safetensors file's length checked.

    A single file beside an index with its shards is refused (the export reads the index, transformers the file);
    `as_transformers_loads` (inference, which loads with transformers alone): the single file, as transformers takes it.
    """
    folder = Path(folder)
    for index_name, pattern in INDEXES:
        index = folder / index_name
        if as_transformers_loads and (folder / SINGLE_FILES[index_name]).is_file():
            files = [folder / SINGLE_FILES[index_name]]
            break
        if index.is_file() and (folder / SINGLE_FILES[index_name]).is_file():
            raise WeightFilesError(
                f"{folder}: holds both {SINGLE_FILES[index_name]} and {index_name} with its shards, two sets of "
                f"weights: transformers loads {SINGLE_FILES[index_name]} and ignores the index, which the export "
                "reads; one is left from an earlier save (save_pretrained does not remove the other layout's "
                "files): delete the one that is not the model, or save into an empty folder")
        if index.is_file():
            files = _indexed(index)
            break
        files = sorted(folder.glob(pattern))
        if shards := [path.name for path in files if "-of-" in path.name]:
            raise WeightFilesError(f"{folder}: {shards[0]} is one shard of several, and {index_name}, which names "
                                   "every tensor's shard, is missing: copy it from where the shards came from")
        if files:
            break
    else:
        raise WeightFilesError(f"{folder}: no weights (*.safetensors or pytorch_model*.bin); a folder with only "
                               "config and tokenizer files cannot be fine-tuned")
    for path in files:
        if path.suffix == ".safetensors":
            check_safetensors_length(path)
    return files


def _indexed(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (ValueError, KeyError, TypeError) as err:
        raise WeightFilesError(f"{index}: not a weight index ({type(err).__name__}: {err})") from None
    files = [index.parent / name for name in sorted(set(weight_map.values()))]
    missing = [path.name for path in files if not path.is_file()]
    if missing:
        raise WeightFilesError(f"{index}: {len(missing)} of its {len(files)} shards are missing ("
                               + ", ".join(missing[:5]) + (", …" if len(missing) > 5 else "")
                               + "): an incomplete download or copy?")
    return files


def check_safetensors_length(path: Path) -> None:
    """The file holds its header and every tensor's bytes: one read of the header, no tensor loaded."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < length <= min(MAX_HEADER, size - 8):
            raise WeightFilesError(f"{path}: not a safetensors file ({size} bytes, no readable header): an "
                                   "incomplete download or copy?")
        try:
            header = json.loads(handle.read(length))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise WeightFilesError(f"{path}: unreadable safetensors header ({type(err).__name__}: {err})") from None
    if size < 8 + length + end:
        raise WeightFilesError(f"{path}: cut short, {size:,} bytes where its header describes {8 + length + end:,}: "
                               "an incomplete download or copy?")
