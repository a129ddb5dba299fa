"""One trainer per run at a time: a live training holds its run's checkpoint folder.

`hold(folder)` takes an OS lock (flock) on `folder/holder.lock` and writes who holds it (host, pid, SLURM job id,
start time). The lock is the kernel's, not the file's presence: it goes when the holding process ends, however it
ends (SIGKILL, scancel, a node lost), so a killed run never leaves a stale lock; a second trainer started while the
first still runs (an orphaned torchrun worker, a SLURM job that outlived a killed Snakemake) refuses to start,
naming the holder. On a shared file system the lock needs a client that supports it (NFSv4, Lustre and GPFS do).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

LOCK_NAME = "holder.lock"
T = TypeVar("T")


class CheckpointFolderHeld(RuntimeError):
    """Another live training holds the checkpoint folder."""


def holder_record() -> dict[str, object]:
    """Who this process is, as the lock file records it."""
    record: dict[str, object] = {"host": socket.gethostname(), "pid": os.getpid(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if os.environ.get("SLURM_JOB_ID"):
        record["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    return record


def describe(record: dict[str, object]) -> str:
    job = record.get("slurm_job_id")
    job = f", SLURM job {job} (scancel {job} stops it)" if job else ""
    return f"pid {record.get('pid', '?')} on {record.get('host', '?')}{job}, started {record.get('started', '?')}"


@contextlib.contextmanager
def hold(folder: str | Path) -> Iterator[None]:
    """Hold `folder` for the duration; raise CheckpointFolderHeld, naming the holder, when a live process has it."""
    path = Path(folder) / LOCK_NAME
    created = not path.parent.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                record = json.loads(path.read_text(encoding="utf-8") or "{}")
            except (OSError, json.JSONDecodeError):
                record = {}
            raise CheckpointFolderHeld(
                f"{folder} is held by a training that is still running: {describe(record)}. Two trainings of one "
                "run would write the same checkpoints and outputs; wait for it to end, or stop it, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder_record()) + "\n").encode(), 0)
        try:
            yield
        finally:
            if created and os.listdir(path.parent) == [LOCK_NAME]:  # a run that failed before anything: no trace
                path.unlink()
                path.parent.rmdir()
    finally:
        os.close(fd)  # releases the lock


def holding_checkpoints(function: Callable[..., T]) -> Callable[..., T]:
    """Decorate a training function so that its global rank 0 holds `checkpoint_root` while it runs (the other ranks
    of a torchrun run are started with it and die with it)."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        root = signature.bind(*args, **kwargs).arguments["checkpoint_root"]
        with hold(root) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext():
            return function(*args, **kwargs)

    return wrapper
