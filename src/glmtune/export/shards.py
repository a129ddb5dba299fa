"""Safetensors folders one tensor at a time: what a folder holds (names, shapes, dtypes, from the file headers), a
tensor read on its own, and shards written tensor by tensor.

Why a writer of our own: `safetensors.torch.save_file` takes a whole dict and copies every tensor to bytes before
writing (twice the shard in memory); the format is a little-endian u64 header length, a JSON header (dtype, shape,
byte offsets), then the raw bytes, so the header can be written first (every shape and dtype is known from the
base's headers) and each tensor streamed after it. Every file written is read back with `safetensors.safe_open`,
the library's reader, which validates the layout (glmtune.export.verify).
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
# safetensors' dtype names (its Rust Dtype enum, as written in headers).
DTYPE_NAMES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
               torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
               torch.bool: "BOOL"}
TORCH_DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}


class UnreadableWeights(ValueError):
    """A model folder without safetensors, or a shard that cannot be read."""


@dataclass(frozen=True)
class Entry:
    """One tensor of a folder: its file, dtype and shape (from the header, nothing read)."""

    file: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count


class Weights:
    """The tensors of a safetensors model folder (one file or an index of shards), read one at a time: each read
    opens its file and closes it, so no shard stays mapped (mapped pages count in the resident memory)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        index, single = self.folder / INDEX, self.folder / SINGLE
        weight_map: dict[str, str] | None = None
        if single.is_file():  # first, as transformers loads it (glmtune.model.weight_files refuses a folder with both)
            files = [SINGLE]
        elif index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            files = list(dict.fromkeys(weight_map.values()))
        else:
            raise UnreadableWeights(f"{self.folder}: no {SINGLE} or {INDEX} (the export reads safetensors only; "
                                    f"re-save the model with save_pretrained(..., safe_serialization=True))")
        self.entries: dict[str, Entry] = {}
        for file in files:
            for name, entry in _header(self.folder / file).items():
                if name in self.entries:
                    raise UnreadableWeights(f"{self.folder}: tensor {name} is in both {self.entries[name].file} and {file}")
                self.entries[name] = Entry(file, entry[0], entry[1])
        if weight_map is not None:
            listed = set(weight_map)
            if listed != set(self.entries):
                odd = sorted(listed ^ set(self.entries))[:3]
                raise UnreadableWeights(f"{index}: the index and the shards' headers disagree on {odd} (a shard is "
                                        f"missing, truncated or from another model)")

    def names(self) -> list[str]:
        return list(self.entries)

    def get(self, name: str) -> torch.Tensor:
        """The tensor as stored (its own dtype), read from its file alone."""
        path = self.folder / self.entries[name].file
        try:
            with safe_open(str(path), framework="pt") as handle:
                return handle.get_tensor(name)
        except Exception as error:  # safetensors raises its own SafetensorError
            raise UnreadableWeights(f"{path}: tensor {name} cannot be read ({error}); the file is corrupt") from error

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows start:stop of a 2-D tensor (an embedding's words, a head's chunk), without reading the rest."""
        path = self.folder / self.entries[name].file
        try:
            with safe_open(str(path), framework="pt") as handle:
                return handle.get_slice(name)[start:stop]
        except Exception as error:
            raise UnreadableWeights(f"{path}: tensor {name} cannot be read ({error}); the file is corrupt") from error


def _header(path: Path) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: (TORCH_DTYPES[handle.get_slice(name).get_dtype()], tuple(handle.get_slice(name).get_shape()))
                    for name in handle.keys()}
    except Exception as error:
        raise UnreadableWeights(f"{path}: not a readable safetensors file ({error})") from error


def plan_shards(names: list[str], entries: dict[str, Entry], dtype: torch.dtype, max_bytes: int) -> dict[str, list[str]]:
    """File name -> tensor names, in order, each file at most max_bytes in `dtype`: huggingface_hub's split, the
    one save_pretrained uses (same file names), planned on meta tensors."""
    from huggingface_hub import split_torch_state_dict_into_shards

    meta = {name: torch.empty(entries[name].shape, dtype=dtype, device="meta") for name in names}
    split = split_torch_state_dict_into_shards(meta, max_shard_size=max_bytes)
    return {file: list(tensors) for file, tensors in split.filename_to_tensors.items()}


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's raw little-endian bytes, without a copy when it is contiguous."""
    if sys.byteorder != "little":
        raise RuntimeError("safetensors files are little-endian; this machine is not")
    flat = tensor.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def digest(tensor: torch.Tensor) -> str:
    """sha256 of the tensor's bytes: equal digests mean bitwise equal tensors."""
    return hashlib.sha256(tensor_bytes(tensor)).hexdigest()


class ShardWriter:
    """One safetensors file written tensor by tensor, in the order of `layout` (name -> (dtype, shape)).

    The header goes first; add() must then be called with exactly those tensors in that order, and close() checks
    that all came."""

    def __init__(self, path: Path, layout: dict[str, tuple[torch.dtype, tuple[int, ...]]]) -> None:
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, (dtype, shape) in layout.items():
            size = torch.empty(shape, dtype=dtype, device="meta").numel() * torch.empty((), dtype=dtype).element_size()
            header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        self.path, self.layout, self.pending = path, layout, list(layout)
        self.handle = open(path, "wb")
        self.handle.write(struct.pack("<Q", len(text)) + text)

    def add(self, name: str, tensor: torch.Tensor) -> None:
        expected = self.pending.pop(0) if self.pending else None
        dtype, shape = self.layout.get(name, (None, None))
        if name != expected or tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise RuntimeError(f"{self.path.name}: got {name} {tensor.dtype} {tuple(tensor.shape)} where the header "
                               f"says {expected} {dtype} {shape}")
        self.handle.write(tensor_bytes(tensor))

    def close(self) -> None:
        self.handle.close()
        if self.pending:
            raise RuntimeError(f"{self.path.name}: {len(self.pending)} tensors never written, first {self.pending[0]}")


def write_index(folder: Path, plan: dict[str, list[str]], total_size: int) -> None:
    """model.safetensors.index.json as save_pretrained writes it (only for more than one shard)."""
    if len(plan) == 1:
        return
    weight_map = {name: file for file, names in plan.items() for name in names}
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def iter_saved(folder: Path, file: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Each tensor of a written shard, read back by safetensors itself (its reader checks the layout)."""
    with safe_open(str(folder / file), framework="pt") as handle:
        for name in handle.keys():
            yield name, handle.get_tensor(name)
