"""Checkpoints a run may resume from: complete means verified, not merely present.

The Trainer writes a checkpoint's files one by one; `ManifestWriter` (rank 0, after every rank has saved) then
writes `manifest.json` last: each file's size and sha256. Before resuming, `last_complete_checkpoint` checks the
newest checkpoint against its manifest and its weights for NaN/inf; a checkpoint that fails is reported with the
file and the reason and the next older one is tried, down to a fresh start. A failed checkpoint is left in place:
the resumed run saves over it when it reaches that step.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch.distributed as dist
from transformers import TrainerCallback

from glmtune.finite import nonfinite_in_file
from glmtune.io import WHOLE_HASH_LIMIT, file_sha256, readable_as_others, write_json

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
def checkpoint_step(checkpoint: str | Path) -> int:
    return int(Path(checkpoint).name.split("-")[1])


def write_manifest(checkpoint: Path) -> None:
    files = sorted(p for p in checkpoint.rglob("*") if p.is_file() and not p.name.lstrip(".").startswith(MANIFEST))
    entries = {str(p.relative_to(checkpoint)): {"size": p.stat().st_size, "sha256": file_sha256(p)} for p in files}
    write_json(checkpoint / MANIFEST, {"whole_hash_limit": WHOLE_HASH_LIMIT, "files": entries})  # atomic


class ManifestWriter(TrainerCallback):
    """Writes checkpoint-N/manifest.json once every rank has written its part of checkpoint N."""

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # each rank writes its own RNG state (and ZeRO shards)
        if state.is_world_process_zero:
            readable_as_others(Path(args.output_dir) / f"checkpoint-{state.global_step}")
            write_manifest(Path(args.output_dir) / f"checkpoint-{state.global_step}")


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why `checkpoint` cannot be resumed from (naming the file), or None when it is whole and finite."""
    manifest = checkpoint / MANIFEST
    if not manifest.is_file():
        return f"{manifest} is missing: the save did not finish (killed while saving?)"
    try:
        recorded = json.loads(manifest.read_text(encoding="utf-8"))
        entries, limit = recorded["files"], recorded["whole_hash_limit"]
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as error:
        return f"{manifest} is unreadable ({error})"
    for name, entry in entries.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != entry["size"]:
            return f"{path} is {path.stat().st_size} bytes, {entry['size']} when saved (truncated or overwritten)"
        if file_sha256(path, limit) != entry["sha256"]:
            return f"{path} differs from what was saved (sha256 mismatch: corrupted on disk?)"
    for name in entries:
        if name.endswith(".safetensors"):
            bad = nonfinite_in_file(checkpoint / name)
            if bad:
                return f"{checkpoint / name}: tensor {bad} holds NaN or inf (training had diverged)"
    return None


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint-N that passes `checkpoint_problem`; the ones skipped are logged with the reason."""
    speak = int(os.environ.get("RANK", "0")) == 0  # every rank checks, one reports
    saved = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]  # not a user's copy
    newest_first = sorted(saved, key=checkpoint_step, reverse=True)
    for checkpoint in newest_first:
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return str(checkpoint)
        if speak:
            log.warning("checkpoint %s is not used: %s", checkpoint.name, problem)
    if newest_first and speak:
        log.warning("no usable checkpoint in %s: training starts from step 0", folder)
    return None


def other_runs_note(checkpoints: Path) -> str | None:
    """What a run's checkpoint root holds besides this run's folder: the folders of runs with other settings or data
    (a changed learning rate, an edited file), kept so that going back resumes them, and never deleted here. Named
    with their size, since a full fine-tune's checkpoints with optimizer state take ~14 bytes a parameter each."""
    others = [folder for folder in checkpoints.parent.iterdir() if folder.is_dir() and folder != checkpoints]
    if not others:
        return None
    size = sum(path.stat().st_size for folder in others for path in folder.rglob("*") if path.is_file())
    return (f"{checkpoints.parent} also holds the checkpoints of {len(others)} earlier run(s) of other settings or "
            f"data ({size / 2**30:.2f} GB: {', '.join(sorted(folder.name for folder in others))}); they are kept so "
            "that going back to those settings resumes them: delete the folders that are not needed")
