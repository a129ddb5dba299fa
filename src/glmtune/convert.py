"""Convert one raw dataset file into canonical conversations, with validation and a rejects file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .formats import CONVERTERS
from .io import read_records, write_json, write_jsonl
from .schema import InvalidRecord, validate_conversation

log = logging.getLogger(__name__)


class ConversionError(ValueError):
    """A record is invalid and the dataset asks to stop on invalid records."""


def convert_file(
    raw_path: str | Path,
    out_path: str | Path,
    rejects_path: str | Path,
    report_path: str | Path,
    fmt: str,
    dataset: str,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Convert `raw_path` with converter `fmt`; write conversations, rejects and a report.

    options: encoding, on_invalid ("error" | "skip"), system (a fixed system prompt), dedupe (bool).
    Every input record ends up either in the output or in the rejects file, with its reason.
    """
    options = options or {}
    if fmt not in CONVERTERS:
        raise ConversionError(f"dataset '{dataset}': unknown format {fmt!r}; known: {', '.join(sorted(CONVERTERS))}")
    convert = CONVERTERS[fmt]
    on_invalid = options.get("on_invalid", "error")
    records = read_records(raw_path, options.get("encoding", "utf-8"))
    kept: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    seen: set[str] = set()
    duplicates = 0
    for where, record in records:
        try:
            messages = convert(record, options)
            if options.get("system") and messages and messages[0]["role"] != "system":
                messages.insert(0, {"role": "system", "content": options["system"], "loss": False})
            validate_conversation(messages)
        except InvalidRecord as err:
            if on_invalid != "skip":
                raise ConversionError(f"{raw_path}: {where}: {err} (set on_invalid: skip to write it to the rejects file instead)") from None
            rejects.append({"where": where, "reason": str(err), "record": record})
            continue
        key = json.dumps(messages, ensure_ascii=False, sort_keys=True)
        if options.get("dedupe", True) and key in seen:
            duplicates += 1
            rejects.append({"where": where, "reason": "exact duplicate of an earlier conversation", "record": record})
            continue
        seen.add(key)
        kept.append({"conversations": messages, "source": {"dataset": dataset, "index": where}})
    write_jsonl(rejects_path, rejects)
    write_jsonl(out_path, kept)
    report = {"dataset": dataset, "file": str(raw_path), "format": fmt, "records_in": len(records),
              "records_out": len(kept), "rejected": len(rejects), "duplicates": duplicates}
    write_json(report_path, report)
    log.info("%s: %d records in, %d converted, %d rejected (see %s)", dataset, len(records), len(kept), len(rejects), rejects_path)
    return report

