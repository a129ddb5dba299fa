"""Writing artifacts atomically, and saying so when the disk is full."""

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
from pathlib import Path
from typing import Any


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


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> int:
    """Write rows as UTF-8 JSON lines atomically; return the count. A row holding a lone surrogate (a rejected
    record, glmtune.data.surrogates) is written with its text escaped, as its JSON file had it."""
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for row in rows:
            try:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
            except UnicodeEncodeError:  # raised before anything of the line is written
                out.write(json.dumps(row) + "\n")
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


def readable_as_others(written: str | Path) -> None:
    """Give a written file, or every file under a written folder, the mode a plain open() gives (0666 less the umask)
    where it has less: safetensors writes weights 0600, so on a shared cluster folder others could read every output
    but the weights (trained, built or converted)."""
    umask = os.umask(0)
    os.umask(umask)  # read without changing it: os.umask is the only way to read it
    mode = 0o666 & ~umask
    written = Path(written)
    for path in [written] if written.is_file() else written.rglob("*"):
        if path.is_file() and not path.is_symlink() and (path.stat().st_mode & mode) != mode:
            path.chmod(path.stat().st_mode | mode)


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
        if tmp.exists():
            readable_as_others(tmp)
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
