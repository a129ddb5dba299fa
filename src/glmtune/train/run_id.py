"""Which run a checkpoint folder belongs to: a hash of the settings that change what is trained and of the data and
model files, so a checkpoint resumes only the run that wrote it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from glmtune.io import file_sha256
from glmtune.settings import TrainSettings

WHOLE_FILE_LIMIT = 64 << 20  # larger files (weight shards) are hashed by size, head and tail: reading 18 GB costs minutes
# Settings that change what a run shows, not what it trains: a change keeps resuming the same run.
OBSERVING_KEYS = ("eval_steps", "report_to")
# Settings added after runs existed, with the value that trains as before: hashed only when set otherwise, so the
# checkpoints of runs from before them keep resuming.
LATER_KEYS = {"warmup_ratio": 0}


def fingerprint(settings: dict[str, Any], *folders: str | Path) -> str:
    """Hash of the settings and the files in `folders`: a checkpoint only resumes the same run."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                digest.update(f"{path.name}:{path.stat().st_size}:{file_sha256(path, WHOLE_FILE_LIMIT)}".encode())
    return digest.hexdigest()[:16]


def run_id_of(settings: TrainSettings, world_size: int, train_dir: str | Path, validation_dir: str | Path,
              model_dir: str | Path) -> str:
    """The checkpoint folder's name. The process count changes the samples per step, and the validation data the
    validation loss, so a change of either is another run, not a finished one to resume. The settings hash as their
    plain config section, so the name depends on the config's values alone, not on how the settings are typed in
    Python: existing checkpoint folders keep resuming."""
    trained = {key: value for key, value in settings.to_config().items()
               if key not in OBSERVING_KEYS and not (key in LATER_KEYS and value == LATER_KEYS[key])}
    return fingerprint({**trained, "world_size": world_size}, train_dir, validation_dir, model_dir)
