"""One trainer per run at a time: a live training holds its run's checkpoint folder.

`hold(folder)` takes an OS lock (flock) on `folder/holder.lock` and writes who holds it (host, pid, SLURM job id,
start time). The lock is the kernel's, not the file's presence: it goes when the holding process ends, however it
ends (SIGKILL, scancel, a node lost), so a killed run never leaves a stale lock; a second trainer started while the
first still runs (an orphaned torchrun worker, a SLURM job that outlived a killed Snakemake) refuses to start,
naming the holder. On a shared file system the lock needs a client that supports it (NFSv4, Lustre and GPFS do).

A refusal also marks the folder (SUPERSEDED): a newer job was asked for while the holder ran, with settings the
holder cannot know. The holder then writes no outputs (`check_not_superseded` before it writes): left running by a
killed Snakemake (a SLURM job goes on without it), its outputs would land after the newer run's refusal, where
Snakemake takes them for the newer run's. Its checkpoints stay, so a run of its settings resumes or reuses them.
Evaluation holds its output folder the same way.

A SLURM job can also outlive its Snakemake by waiting: pending when Snakemake was killed, it starts after a newer run's
job has held the folder and finished. The lock is free then and no refusal marked the folder; but SLURM numbers a
cluster's jobs in the order they are submitted, and the lock file keeps the last holder's: a job whose id is below it
is left over from before, and refuses to start (LeftOver), writing nothing.
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
SUPERSEDED = "superseded.json"  # written by a job refused while the holder ran
T = TypeVar("T")
_held: set[Path] = set()  # the folders this process holds


class CheckpointFolderHeld(RuntimeError):
    """Another live job (a training, an evaluation) holds the folder."""


class Superseded(RuntimeError):
    """A newer job of this output was refused while this one ran: its outputs are not written."""


class LeftOver(RuntimeError):
    """A SLURM job submitted before the one that last held the folder: left over from an earlier Snakemake."""


def holder_record() -> dict[str, object]:
    """Who this process is, as the lock file records it."""
    record: dict[str, object] = {"host": socket.gethostname(), "pid": os.getpid(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    if os.environ.get("SLURM_JOB_ID"):
        record["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
        record["slurm_cluster"] = os.environ.get("SLURM_CLUSTER_NAME", "")
    return record


def submitted_after(earlier: dict[str, object], own: dict[str, object]) -> bool:
    """Whether the folder's last holder `earlier` is a SLURM job submitted after this one (`own`), of the same
    cluster (job ids grow in submission order within one); a requeued job keeps its id and is not after itself."""
    try:
        return (earlier.get("slurm_cluster", "") == own.get("slurm_cluster", "")
                and int(str(earlier["slurm_job_id"])) > int(str(own["slurm_job_id"])))
    except (KeyError, ValueError):  # one of them is no SLURM job
        return False


def describe(record: dict[str, object]) -> str:
    job = record.get("slurm_job_id")
    job = f", SLURM job {job} (scancel {job} stops it)" if job else ""
    return f"pid {record.get('pid', '?')} on {record.get('host', '?')}{job}, started {record.get('started', '?')}"


@contextlib.contextmanager
def hold(folder: str | Path, job: str = "a training") -> Iterator[None]:
    """Hold `folder` for the duration; raise CheckpointFolderHeld, naming the holder, when a live process has it
    (and mark the folder SUPERSEDED for the holder to see). `job` names what holds it in the message ("a training")."""
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
            from glmtune.io import write_json

            write_json(Path(folder) / SUPERSEDED, {"refused": holder_record(), "holder": record})
            raise CheckpointFolderHeld(
                f"{folder} is held by {job} that is still running: {describe(record)}. Two of them would write the "
                f"same files; it will write no outputs now (a newer job was asked for): wait for it to end, or stop "
                "it, then run again"
            ) from None
        try:
            last = json.loads(os.pread(fd, 1 << 16, 0).decode("utf-8") or "{}")
        except (ValueError, UnicodeDecodeError):
            last = {}
        if isinstance(last, dict) and submitted_after(last, holder_record()):
            raise LeftOver(
                f"{folder} was held by {job} submitted after this one ({describe(last)}): this SLURM job is left over "
                f"from an earlier Snakemake, killed while the job waited, with settings the newer one cannot know; it "
                f"writes nothing (when you stop Snakemake on a cluster, scancel its pending jobs too; if this cluster's "
                f"job ids started over, delete {path})")
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder_record()) + "\n").encode(), 0)
        (Path(folder) / SUPERSEDED).unlink(missing_ok=True)  # a refusal before this job's own time
        _held.add(Path(folder).resolve())
        try:
            yield
        finally:
            _held.discard(Path(folder).resolve())
            if created and os.listdir(path.parent) == [LOCK_NAME]:  # a run that failed before anything: no trace
                path.unlink()
                path.parent.rmdir()
    finally:
        os.close(fd)  # releases the lock


def check_not_superseded(folder: str | Path) -> None:
    """Raise Superseded when a job was refused `folder` since this process took it: called before the outputs are
    written. Nothing to check where this process does not hold it (another rank, a direct call)."""
    mark = Path(folder) / SUPERSEDED
    if Path(folder).resolve() not in _held or not mark.is_file():
        return
    try:
        refused = describe(json.loads(mark.read_text(encoding="utf-8")).get("refused", {}))
    except (OSError, json.JSONDecodeError):
        refused = "?"
    raise Superseded(f"a newer job for {folder} ({refused}) was refused while this one ran, with settings this one "
                     "cannot know: its outputs are not written (a Snakemake killed while it ran would take them for "
                     "the newer job's); run the workflow again (a training's checkpoints stay: it resumes from them)")


def holding(folder_of: Callable[[dict[str, Any]], str | Path], job: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Decorate a stage function so that its global rank 0 holds the folder `folder_of` finds in its arguments while
    it runs (the other ranks of a torchrun run are started with it and die with it)."""

    def decorate(function: Callable[..., T]) -> Callable[..., T]:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            folder = folder_of(signature.bind(*args, **kwargs).arguments)
            with hold(folder, job) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext():
                return function(*args, **kwargs)

        return wrapper

    return decorate


holding_checkpoints = holding(lambda arguments: arguments["checkpoint_root"], "a training")
