"""What a prepared model folder was made from, so that planning sees a model folder replaced under it.

Snakemake dates the files of a `model.path` folder by their modification time: weights replaced by files dated
earlier than the outputs (`cp -p`, `rsync -a`, `mv` of a copy made before, a link repointed to another checkpoint)
re-ran nothing, and the evaluation and the merged model stayed the old model's. prepare_model records the files it
read, by content (`record_source`: each weight file by size, head and tail, as glmtune.model.base_identity does; the
rest whole), beside its output; planning compares the folder with that record (`changed_files`) and, where they
differ, dates the prepared folder back (`date_back`) so that Snakemake prepares it again and re-runs all made from it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from glmtune.io import file_sha256, write_json
from glmtune.model.base_identity import HEAD_AND_TAIL, folder_inputs


def record_path(prepared: str | Path) -> Path:
    """resources/models/<name>.source.json: beside the prepared folder, which Snakemake empties before each run."""
    return Path(f"{Path(prepared)}.source.json")


def source_state(folder: str | Path, trust_remote_code: bool) -> dict[str, str]:
    """File name -> hash of every file prepare_model takes from a local folder (its Snakemake inputs)."""
    return {Path(path).name: file_sha256(Path(path), HEAD_AND_TAIL)
            for path in folder_inputs(folder, trust_remote_code) if Path(path).is_file()}


def record_source(prepared: str | Path, folder: str | Path, trust_remote_code: bool) -> None:
    write_json(record_path(prepared), {"path": str(Path(folder).resolve()),
                                       "files": source_state(folder, trust_remote_code)})


def changed_files(prepared: str | Path, folder: str | Path, trust_remote_code: bool) -> list[str]:
    """The files of `folder` that differ from what `prepared` was made from (added and removed ones too); none where
    the prepared folder or its record is not there (a folder prepared before the record was written)."""
    record = record_path(prepared)
    if not Path(prepared).is_dir() or not record.is_file():
        return []
    before = json.loads(record.read_text(encoding="utf-8"))["files"]
    now = source_state(folder, trust_remote_code)
    return sorted(name for name in before.keys() | now.keys() if before.get(name) != now.get(name))


def date_back(prepared: str | Path) -> None:
    """Make Snakemake see the prepared folder as older than any input: it dates a folder output by the
    `.snakemake_timestamp` file it writes there (the folder's own time where there is none)."""
    stamp = Path(prepared) / ".snakemake_timestamp"
    os.utime(stamp if stamp.is_file() else prepared, (0, 0))


def touching(argv: list[str]) -> bool:
    """Whether the snakemake command line marks what is there current (`--touch`, `-t`) rather than running jobs."""
    return "--touch" in argv or "-t" in argv
