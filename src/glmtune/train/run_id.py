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
# Settings that change what a run shows or how often it saves, not what it trains: a change keeps resuming the same
# run (the resumed Trainer takes them from the config: glmtune.train.callbacks.StepsFromConfig).
OBSERVING_KEYS = ("eval_steps", "report_to", "logging_steps", "save_steps")
# Observing keys that earlier versions hashed: a run's checkpoint folder from then has the name they gave it.
ONCE_HASHED_KEYS = ("logging_steps", "save_steps")
# Settings added after runs existed, with the value that trains as before: hashed only when set otherwise, so the
# checkpoints of runs from before them keep resuming.
LATER_KEYS = {"warmup_ratio": 0}


def files_lines(*folders: str | Path) -> list[str]:
    """What the hash reads of the files in `folders` (name, size, sha256: big files by their ends)."""
    return [f"{path.name}:{path.stat().st_size}:{file_sha256(path, WHOLE_FILE_LIMIT)}"
            for folder in folders for path in sorted(Path(folder).rglob("*")) if path.is_file()]


def fingerprint(settings: dict[str, Any], *folders: str | Path, files: list[str] | None = None) -> str:
    """Hash of the settings and the files in `folders` (or their `files_lines`, read once for several hashes): a
    checkpoint only resumes the same run."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for line in files_lines(*folders) if files is None else files:
        digest.update(line.encode())
    return digest.hexdigest()[:16]


def run_id_of(settings: TrainSettings, world_size: int, train_dir: str | Path, validation_dir: str | Path,
              model_dir: str | Path, *, earlier: bool = False, files: list[str] | None = None) -> str:
    """The checkpoint folder's name. The process count changes the samples per step, and the validation data the
    validation loss, so a change of either is another run, not a finished one to resume. The settings hash as their
    plain config section, so the name depends on the config's values alone, not on how the settings are typed in
    Python. `earlier`: the name versions before ONCE_HASHED_KEYS became observing gave the run."""
    left_out = tuple(key for key in OBSERVING_KEYS if not (earlier and key in ONCE_HASHED_KEYS))
    trained = {key: value for key, value in settings.to_config().items()
               if key not in left_out and not (key in LATER_KEYS and value == LATER_KEYS[key])}
    if settings.max_steps is None:  # num_epochs' steps were counted short before (glmtune.train.trainer.steps_of):
        trained["epoch_steps"] = "as the Trainer's loader"  # such a run's checkpoints had another schedule: not resumed
    return fingerprint({**trained, "world_size": world_size}, train_dir, validation_dir, model_dir, files=files)


def checkpoint_folder(root: str | Path, settings: TrainSettings, world_size: int, train_dir: str | Path,
                      validation_dir: str | Path, model_dir: str | Path) -> Path:
    """The run's checkpoint folder under `root`: its own name, or the earlier name where only that folder exists (a
    run started before the update keeps resuming). Every rank of a torchrun run picks the same one: none creates
    the new name while the earlier one is there."""
    files = files_lines(train_dir, validation_dir, model_dir)
    own = Path(root) / run_id_of(settings, world_size, train_dir, validation_dir, model_dir, files=files)
    earlier = Path(root) / run_id_of(settings, world_size, train_dir, validation_dir, model_dir, earlier=True, files=files)
    return earlier if earlier.is_dir() and not own.is_dir() else own
