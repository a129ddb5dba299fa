"""What an exported folder was made from: `export_info.json`, written beside its weights.

`results/merged_model` is the export of one run (`export.run`); its name says nothing of which. The record names the
trained folder it was made from, that run's training summary (run id, steps, loss), the base (path and fingerprint,
as training recorded it in base_model.json) and the precision saved, so two merged models can be told apart and an
export traced back to its run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from glmtune.model.base_identity import fingerprint, fingerprint_files
from glmtune.settings import ExportSettings

EXPORT_INFO = "export_info.json"
TRAIN_SUMMARY = "train_summary.json"


def export_info(trained_dir: str | Path, base_dir: str | Path, method: str, settings: ExportSettings) -> bytes:
    """The record's JSON: trained folder (as the export was given it), method, training summary, base, dtype."""
    summary_path = Path(trained_dir) / TRAIN_SUMMARY
    summary: dict[str, Any] | None = (json.loads(summary_path.read_text(encoding="utf-8"))
                                      if summary_path.is_file() else None)
    info = {
        "exported_from": str(trained_dir),
        "method": method,
        "train_summary": summary,
        "base": {"path": str(Path(base_dir).resolve()), "fingerprint": fingerprint(fingerprint_files(base_dir))},
        "dtype": settings.dtype,
    }
    return (json.dumps(info, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def write_extra_files(extra_files: dict[str, str | Path | bytes] | None, folder: Path) -> None:
    """Name -> a file copied in, or bytes written as they are."""
    for name, source in (extra_files or {}).items():
        if isinstance(source, bytes):
            (folder / name).write_bytes(source)
        else:
            shutil.copyfile(source, folder / name)
