"""Outputs an earlier config left in a job folder that look like this config's, named while planning.

Snakemake rebuilds what the current targets need and never deletes the rest: after switching the exported run to
P-Tuning v2 (nothing to merge), `results/merged_model` is still the earlier LoRA's export; a run that now evaluates
another run's training keeps the adapter it trained itself before; a dropped run keeps its folder; a run whose method
changed keeps the other kind of trained folder. Each would be loaded, read or shipped as current. Nothing is deleted
here (they are the user's files): each is named with what is current instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from glmtune.export.provenance import EXPORT_INFO

TRAINED_KINDS = ("adapter", "model")  # what training writes: an adapter, or with full SFT a whole model


@dataclass(frozen=True)
class RunLayout:
    """Where a run's current outputs are: the run whose training it uses (itself, or one with the same training
    settings), what that training writes (adapter or model), and whether it has a merged model."""

    trainer: str
    kind: str
    mergeable: bool

    def trained_dir(self) -> str:
        return f"results/runs/{self.trainer}/{self.kind}"


def leftover_warnings(root: str | Path, runs: Mapping[str, RunLayout], export_run: str) -> list[str]:
    """One message per kind of leftover under `root` (the job folder)."""
    root = Path(root)
    messages = []
    folders = root / "results" / "runs"
    dropped = sorted(p.name for p in folders.iterdir() if p.is_dir() and p.name not in runs) if folders.is_dir() else []
    if dropped:
        messages.append(
            f"results/runs/{{{','.join(dropped)}}}: no such run in this config (left from an earlier one); nothing "
            "updates them or shows them in the comparison; delete them (and logs/runs/, benchmarks/runs/ of the same "
            "names) when they are no longer wanted")
    for run, layout in runs.items():
        for kind in TRAINED_KINDS:
            folder = f"results/runs/{run}/{kind}"
            if (root / folder).is_dir() and folder != layout.trained_dir():
                why = (f"run {run} now uses run {layout.trainer}'s training" if layout.trainer != run
                       else f"run {run} now trains {'a whole model (full SFT)' if layout.kind == 'model' else 'an adapter'}")
                messages.append(f"{folder} is left from an earlier config: {why}, {layout.trained_dir()}; it and the "
                                f"log.jsonl, loss.png beside it are not run {run}'s current training")
        merged = f"results/runs/{run}/merged_model"
        if (root / merged).is_dir() and not layout.mergeable:
            messages.append(f"{merged} is left from an earlier config: run {run} now has nothing to merge (its model "
                            f"is {layout.trained_dir()}); delete it")
    chosen = runs[export_run]
    export = root / "results" / "merged_model"
    if export.is_dir() and not chosen.mergeable:
        messages.append(f"results/merged_model is an earlier export, not this config's: run {export_run} (export.run) "
                        f"now has nothing to merge; its model is {chosen.trained_dir()}; delete results/merged_model, "
                        "or export a run that merges (export.run)")
    elif export.is_dir() and (made_from := exported_from(export)) not in (None, chosen.trained_dir()):
        messages.append(f"results/merged_model is the export of {made_from} ({EXPORT_INFO}), not of run {export_run}'s "
                        f"{chosen.trained_dir()} (export.run): it is made again when results/merged_model is asked for")
    return messages


def exported_from(folder: Path) -> str | None:
    """The trained folder an export was made from, as its export_info.json names it (None: an earlier export)."""
    try:
        return str(json.loads((folder / EXPORT_INFO).read_text(encoding="utf-8"))["exported_from"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
