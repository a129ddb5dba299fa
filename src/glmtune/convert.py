"""Convert one raw dataset file into canonical conversations, with validation and a rejects file."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from .cleaning import Cleaning, Dropped, clean_conversation
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

    options: encoding, on_invalid ("error" | "skip"), system (a fixed system prompt), dedupe (bool),
    clean (Cleaning's fields), and the converter's own keys.
    Every input record ends up either in the output or in the rejects file, with its reason: invalid
    records (or an error, by on_invalid), records that cleaning empties or filters, and duplicates.
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
    rules = Cleaning.from_options(options.get("clean"))
    counts: Counter[str] = Counter()
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
            counts["invalid"] += 1
            continue
        try:
            messages = clean_conversation(messages, rules, counts)
        except Dropped as err:
            rejects.append({"where": where, "reason": str(err), "record": record})
            continue
        key = json.dumps(messages, ensure_ascii=False, sort_keys=True)
        if options.get("dedupe", True) and key in seen:
            counts["duplicates"] += 1
            rejects.append({"where": where, "reason": "exact duplicate of an earlier conversation", "record": record})
            continue
        seen.add(key)
        kept.append({"conversations": messages, "source": {"dataset": dataset, "index": where}})
    write_jsonl(rejects_path, rejects)
    write_jsonl(out_path, kept)
    report = {"dataset": dataset, "file": str(raw_path), "format": fmt, "records_in": len(records),
              "records_out": len(kept), "rejected": len(rejects), "duplicates": counts["duplicates"],
              "steps": dict(sorted(counts.items()))}
    write_json(report_path, report)
    log.info("%s: %d records in, %d converted, %d rejected (see %s); cleaning: %s",
             dataset, len(records), len(kept), len(rejects), rejects_path, report["steps"])
    return report

