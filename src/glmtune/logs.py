"""Logging for workflow jobs: to the rule's log file and to the terminal."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def job_logging(log_file: str | Path | None) -> Iterator[logging.Logger]:
    """Send INFO logs of glmtune (and warnings) to `log_file` and stderr for the duration of a job.

    An exception is logged to the file too, so `logs/` explains a failed job on its own. Every workflow job runs in
    it, so this is also where a job's process is tied to its parent, Snakemake (glmtune.lifetime.die_with_parent): a
    job left running by a Snakemake killed alone would write its outputs later, over a newer run's.
    """
    from glmtune.lifetime import die_with_parent

    die_with_parent()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w", encoding="utf-8"))
    logging.basicConfig(level=logging.WARNING, handlers=handlers, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.captureWarnings(True)
    logger = logging.getLogger("glmtune")
    logger.setLevel(logging.INFO)
    try:
        yield logger
    except Exception as err:
        logger.error("%s: %s", type(err).__name__, err)
        raise


def bar_options() -> dict[str, float | bool]:
    """tqdm options for a bar that also shows in a log file (nohup, sbatch): never disabled, and at most one line
    every 10 s when stderr is not a terminal (tqdm's default would vanish there, or flood the file)."""
    return {"disable": False, "mininterval": 2 if sys.stderr.isatty() else 10}
