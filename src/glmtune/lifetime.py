"""A process's life tied to its parent's: the kernel ends it when the parent ends, however the parent ends."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent ends (Linux prctl PR_SET_PDEATHSIG), however the parent
    ends. torchrun starts its workers in sessions of their own, so a SIGKILL of the job's process group (a killed
    Snakemake) would otherwise leave them training; the launcher itself gets it too (a kill of the job's script alone).
    Every workflow job calls it (glmtune.logs.job_logging; the train and evaluate scripts first thing, as they may
    launch torchrun), Snakemake being its parent: a job left running by a Snakemake killed alone (`kill -9`, the OOM
    killer) would write its outputs minutes later, over what a newer run had made or refused.
    A no-op where prctl is missing."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent ended before the prctl: it will never signal
        os.kill(os.getpid(), signal.SIGKILL)
