"""Reading user data files robustly and writing artifacts atomically."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class DataFileError(ValueError):
    """A data file cannot be read; the message names the file and the line."""


class DiskFullError(OSError):
    """No space left on the device while writing an artifact; the message names the folder and its free space."""


# How the libraries that write artifacts say ENOSPC when they do not raise OSError(ENOSPC): safetensors (Rust's
# StorageFull), Arrow's and the C library's text. torch.save (checkpoints' optimizer states) says only that its
# writer failed ("file write failed", "unexpected pos"): that counts as disk full when the disk is then nearly full.
_DISK_FULL_TEXT = ("No space left on device", "StorageFull", "os error 28", "errno 28")
_WRITER_FAILED_TEXT = ("file write failed", "inline_container.cc", "PytorchStreamWriter")
NEARLY_FULL = 64 << 20


def free_bytes(folder: str | Path) -> int:
    """Free space on the file system of `folder` (or of its nearest existing parent)."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return f"{count:.1f} TiB"


def is_disk_full(err: BaseException, folder: str | Path) -> bool:
    """True when `err` (or what it was raised from) is the device running out of space while writing `folder`."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        text = str(seen)
        if any(marker in text for marker in _DISK_FULL_TEXT):
            return True
        if any(marker in text for marker in _WRITER_FAILED_TEXT) and free_bytes(folder) < NEARLY_FULL:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def reporting_disk_full(*folders: str | Path) -> Iterator[None]:
    """Re-raise running out of disk space inside the block as one DiskFullError line naming the folder being
    written (the first of `folders` is where the free space is measured) instead of a library's traceback."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:
        if not folders or not is_disk_full(err, folders[0]):
            raise
        where = " and ".join(str(folder) for folder in folders)
        raise DiskFullError(
            f"disk full: no space left on the device while writing {where} ({_size(free_bytes(folders[0]))} free "
            f"there now); free space on that file system, or point the output elsewhere, and run again"
        ) from None


@dataclass(frozen=True)
class BadLine:
    """A JSON-lines line that is not valid JSON, kept in place of its record when bad lines are skipped."""

    text: str
    reason: str


def read_records(path: str | Path, encoding: str = "utf-8", skip_bad_lines: bool = False) -> list[tuple[str, Any]]:
    """Return (where, record) pairs, where is "line N" (JSON lines) or "record N" (array index) from a JSON array or a JSON-lines file.

    The extension is not trusted (a JSON array in a `.jsonl` file is common): the content decides.
    A UTF-8 BOM and CRLF line ends are accepted. With `skip_bad_lines`, a JSON-lines line that does
    not parse comes back as a BadLine (so the caller can reject it and still count it); otherwise it
    raises DataFileError. A JSON array that does not parse, and a top-level JSON object, are always a
    DataFileError: no record in them can be trusted.
    """
    path = Path(path)
    text = _decode(path, path.read_bytes(), encoding)
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataFileError(f"{path}: line {err.lineno}: invalid JSON array: {err.msg}") from None
        if not isinstance(data, list):
            raise DataFileError(f"{path}: expected a JSON array or JSON lines")
        return [(f"record {index}", item) for index, item in enumerate(data)]
    if stripped.startswith("{"):
        _refuse_top_level_object(path, text)
    return _json_lines(path, text, skip_bad_lines)


# Tried in this order when the given encoding fails, to name one that reads the whole file (UTF-8 first: other
# encodings' bytes are almost never valid UTF-8, while GBK reads many UTF-8 files, as nonsense).
LIKELY_ENCODINGS = ("utf-8", "gbk", "gb18030", "big5")


def _codec(encoding: str) -> str:
    return "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding


def _decode(path: Path, raw: bytes, encoding: str) -> str:
    try:
        return raw.decode(_codec(encoding))
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        fits = next((name for name in LIKELY_ENCODINGS if name != _codec(encoding).replace("-sig", "")
                     and _decodes(raw, name)), None)
        hint = (f"the whole file decodes as {fits}: set the dataset's `encoding: {fits}` if that is its encoding"
                if fits else "set the dataset's `encoding:` to the file's encoding")
        raise DataFileError(f"{path}: line {line}: cannot decode as {encoding} ({err.reason}); {hint}") from None


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(_codec(encoding))
    except UnicodeDecodeError:
        return False
    return True


def _refuse_top_level_object(path: Path, text: str) -> None:
    """Stop at a JSON object spread over several lines (one record, or records wrapped as {"data": [...]}).

    Read as JSON lines it fails on a property name, or, skipping bad lines, silently keeps the inner records that
    happen to sit on lines of their own. A first line that parses is a JSON-lines record. Otherwise, when the
    text does not parse either, a first line of just "{" (pretty-printed) or a parse that got past the first line
    still marks an object; a parse that fails within the first line is a bad JSON-lines line.
    """
    number = text[: len(text) - len(text.lstrip())].count("\n") + 1
    first = text.lstrip().split("\n", 1)[0].strip()
    try:
        json.loads(first)
        return
    except json.JSONDecodeError:
        pass
    expected = "expected JSON lines (one record per line) or a JSON array of records: put the records in a JSON array"
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        if first == "{" or err.lineno > number:
            raise DataFileError(f"{path}: line {err.lineno}: top level is a JSON object that does not parse "
                                f"({err.msg}); {expected}") from None
        return
    raise DataFileError(f"{path}: line {number}: top level is a JSON object; {expected}")


def _json_lines(path: Path, text: str, skip_bad_lines: bool) -> list[tuple[str, Any]]:
    """The records of a JSON-lines text. Lines end at \\n (or \\r\\n) only: str.splitlines would also split at
    U+2028, U+2029 and U+0085, which JSON strings may hold as they are."""
    records: list[tuple[str, Any]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            records.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as err:
            if not skip_bad_lines:
                raise DataFileError(f"{path}: line {number}: invalid JSON: {err.msg} (column {err.colno}); fix the "
                                    f"line, or set on_invalid: skip to write it to the rejects file") from None
            records.append((f"line {number}", BadLine(line, f"invalid JSON: {err.msg} (column {err.colno})")))
    return records


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> int:
    """Write rows as UTF-8 JSON lines atomically; return the count."""
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_jsonl(path: str | Path) -> Iterator[Any]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """Write a UTF-8 text file atomically: a kill leaves the old file or none, never half of the new one."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds.

    Works for files and directories alike, so a killed job never leaves an artifact that looks complete. A full
    disk inside the block is a one-line DiskFullError naming `path` (reporting_disk_full).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.partial-"
    for stale in path.parent.glob(f"{glob.escape(prefix)}*"):  # left by a killed earlier write (a merged model is GBs)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent)) / path.name
    try:
        with reporting_disk_full(path):
            yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


# Files above this (full-SFT weight shards, optimizer states of a large model) are hashed by size, head and tail:
# hashing 100 GB at every save would stall training for minutes. Adapters and their optimizer states are far smaller.
WHOLE_HASH_LIMIT = 1 << 30


def file_sha256(path: Path, whole_limit: int = WHOLE_HASH_LIMIT) -> str:
    """sha256 of a file, or of its first and last MiB when it is larger than `whole_limit`."""
    digest, size = hashlib.sha256(), path.stat().st_size
    with open(path, "rb") as handle:
        if size <= whole_limit:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        else:  # a safetensors header (names, shapes, offsets) is at the head; the tail changes with the values
            digest.update(handle.read(1 << 20))
            handle.seek(size - (1 << 20))
            digest.update(handle.read())
    return digest.hexdigest()
