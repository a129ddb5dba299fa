"""Convert one raw dataset file (or a list of files read as one) into canonical conversations, with validation and a
rejects file."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from glmtune.data.cleaning import Dropped, clean_conversation, placeholders_in, rules_that_matched_nothing
from glmtune.data.formats import CONVERTERS
from glmtune.data.reasons import common_reasons
from glmtune.data.records import BadLine, read_records, refuse_lone_wrapper
from glmtune.data.surrogates import surrogate_problem
from glmtune.repeated_keys import repeated_paths
from glmtune.data.unread import mark_carried, tracked, unread
from glmtune.io import write_json, write_jsonl
from glmtune.data.conversation import (InvalidRecord, conversation_key, message, undeclared_calls,
                                       validate_conversation)
from glmtune.data_settings import ConvertSettings

log = logging.getLogger(__name__)


class ConversionError(ValueError):
    """A record is invalid and the dataset asks to stop on invalid records."""


def add_system_prompt(messages: list[dict[str, Any]], prompt: str | None) -> bool:
    """Give the conversation the dataset's fixed system prompt; True when the record's own system text wins.

    A conversation without a system message gets one; a system message with no text (e.g. tools only)
    gets the prompt as its text; a record's own non-empty system text is kept (the caller counts it).
    """
    if not prompt or not messages:
        return False
    first = messages[0]
    if first["role"] != "system":
        messages.insert(0, message("system", prompt))
        return False
    content = first.get("content")
    if not isinstance(content, str):
        return False  # invalid: left for validation to reject
    if not content.strip():
        first["content"] = prompt
        return False
    return content != prompt


DUPLICATE = "exact duplicate of an earlier conversation"


def top_reasons(rejects: list[dict[str, Any]]) -> str:
    """The three most common kinds of reject reason, each with its count and where it first occurs."""
    return "; ".join(str(group) for group in common_reasons(rejects, 3))


SAMPLE = 20  # records tried with the other formats when a file's records fail its own


def other_formats(records: Sequence[tuple[str, Any]], fmt: str, dataset: str) -> str:
    """A hint naming the formats (with their default columns) that read the file's first records whole, where the
    records failed `fmt`: a wrong `format:` then says what to write instead of suggesting on_invalid: skip."""
    sample = [record for _, record in records if not isinstance(record, BadLine)][:SAMPLE]
    fits = []
    for name, convert in CONVERTERS.items():
        try:
            for record in sample:
                validate_conversation(convert(record, {}))
        except (InvalidRecord, ValueError, TypeError, KeyError, AttributeError):
            continue
        fits.append(name)
    if not sample or fmt in fits or not fits:
        return ""
    first = "first record" if len(sample) == 1 else f"first {len(sample)} records"
    return (f"; format: {' or '.join(fits)} reads the file's {first}: is that the file's format? (dataset "
            f"'{dataset}' reads it as {fmt})")


def nothing_kept(raw_path: str | Path, dataset: str, fmt: str, rejects: list[dict[str, Any]]) -> str:
    """Why every record of a file was rejected."""
    return (f"{raw_path}: all {len(rejects)} records were rejected, so dataset '{dataset}' yields nothing. Most common "
            f"reasons: {top_reasons(rejects)}. Check that the file is the one meant and that format: {fmt} is its format")


def too_many_rejected(raw_path: str | Path, dataset: str, records: int, rejects: list[dict[str, Any]], limit: float) -> str:
    return (f"{raw_path}: {len(rejects)} of {records} records rejected ({len(rejects) / records:.0%}; duplicates not "
            f"counted), more than "
            f"datasets.{dataset}.max_reject_ratio {limit}. Most common reasons: {top_reasons(rejects)}. Fix the data or "
            f"the format, or raise max_reject_ratio if so many rejects are expected (they are in the rejects file)")


def read_files(paths: Sequence[Path], dataset: str, encoding: str, skip_bad_lines: bool, fmt: str,
               reads: Callable[[Any], bool]) -> list[tuple[str, Any]]:
    """(where, record) of every file in turn; with several files, where names the file too. A file that holds no
    record stops: a dataset that yields nothing, or an empty shard, is a mistake; so does a one-line wrapper of
    records that format `fmt` does not `reads` as a record (refuse_lone_wrapper)."""
    records: list[tuple[str, Any]] = []
    for path in paths:
        found = read_records(path, encoding, skip_bad_lines=skip_bad_lines)
        if not found:
            raise ConversionError(f"{path}: no records: the file is empty, only whitespace, an empty JSON array, or a "
                                  f"table without rows. A file that yields nothing is a mistake: check dataset "
                                  f"'{dataset}''s files")
        refuse_lone_wrapper(path, found, fmt, reads)
        records += found if len(paths) == 1 else [(f"{path}: {where}", record) for where, record in found]
    return records


def convert_file(
    raw_path: str | Path | Sequence[str | Path],
    out_path: str | Path,
    rejects_path: str | Path,
    report_path: str | Path,
    fmt: str,
    dataset: str,
    settings: ConvertSettings,
) -> dict[str, Any]:
    """Convert `raw_path` (a file, or a list of files read as one) with converter `fmt`; write conversations, rejects
    and a report.

    settings: encoding, on_invalid ("error" | "skip"), system (a fixed system prompt), dedupe (bool),
    clean (the cleaning steps), max_reject_ratio (more rejects than this share of the records stop the job),
    and the converter's own keys (columns, tags).
    Every input record ends up either in the output or in the rejects file, with its reason: invalid
    records and JSON-lines lines that are not JSON (or an error, by on_invalid), records that cleaning
    empties, filters or leaves invalid, and duplicates.
    """
    if fmt not in CONVERTERS:
        raise ConversionError(f"dataset '{dataset}': unknown format {fmt!r}; known: {', '.join(sorted(CONVERTERS))}")
    convert = CONVERTERS[fmt]
    on_invalid, options = settings.on_invalid, settings.converter_options()
    paths = [Path(raw_path)] if isinstance(raw_path, (str, Path)) else [Path(path) for path in raw_path]

    def reads(record: Any) -> bool:
        try:
            validate_conversation(convert(record, options))
        except InvalidRecord:
            return False
        return True

    records = read_files(paths, dataset, settings.encoding, on_invalid == "skip", fmt, reads)
    label = str(paths[0]) if len(paths) == 1 else f"{paths[0]} and {len(paths) - 1} more files"

    def at(where: str) -> str:  # a record's place with its file (which `where` holds when there are several)
        return f"{paths[0]}: {where}" if len(paths) == 1 else where

    kept: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    seen: set[str] = set()
    rules = settings.clean
    counts: Counter[str] = Counter()
    removed: Counter[str] = Counter()  # a remove_strings string -> messages it changed
    left: dict[str, list[str]] = {}  # placeholder -> where it was left
    undeclared: dict[str, list[str]] = {}  # a called function its record's tools do not declare -> where
    not_read: Counter[str] = Counter()  # a key the converter never read -> records holding it
    shortened: list[str] = []  # records that lost an exchange to clean.drop_empty_turns
    for where, record in records:
        if isinstance(record, BadLine):  # only with on_invalid: skip
            rejects.append({"where": where, "reason": record.reason, "record": record.text})
            counts["invalid_json"] += 1
            continue
        watched = tracked(record)
        try:
            if repeated := repeated_paths(record):
                raise InvalidRecord(f"{', '.join(repeated)}: written twice in one object; JSON keeps only the last "
                                    "value, which may not be the one meant: write each key once")
            if half := surrogate_problem(record):
                raise InvalidRecord(half)
            messages = convert(watched, options)
            kept_own_system = add_system_prompt(messages, settings.system)
            validate_conversation(messages)
        except InvalidRecord as err:
            if on_invalid != "skip":
                hint = other_formats(records, fmt, dataset) or " (set on_invalid: skip to write it to the rejects file instead)"
                raise ConversionError(f"{at(where)}: {err}{hint}") from None
            rejects.append({"where": where, "reason": str(err), "record": record})
            counts["invalid"] += 1
            continue
        counts["system_prompt_kept_from_record"] += kept_own_system
        mark_carried(messages)
        not_read.update(unread(watched))
        try:
            before = counts["empty_turns_dropped"]
            messages = clean_conversation(messages, rules, counts, removed)
            validate_conversation(messages)  # cleaning may break a rule the converter's output kept
        except Dropped as err:
            rejects.append({"where": where, "reason": str(err), "record": record})
            continue
        except InvalidRecord as err:
            counts["invalid_after_cleaning"] += 1
            rejects.append({"where": where, "reason": f"cleaning left an invalid conversation: {err}", "record": record})
            continue
        key = conversation_key(messages)
        if settings.dedupe and key in seen:
            counts["duplicates"] += 1
            rejects.append({"where": where, "reason": DUPLICATE, "record": record})
            continue
        seen.add(key)
        unfilled = placeholders_in(messages)
        for placeholder in unfilled:
            left.setdefault(placeholder, []).append(where)
        counts["records_with_placeholders_left"] += bool(unfilled)
        for function in dict.fromkeys(calls := undeclared_calls(messages)):
            undeclared.setdefault(function, []).append(where)
        counts["records_calling_undeclared_tools"] += bool(calls)
        if counts["empty_turns_dropped"] > before:
            shortened.append(where)
        # The file too where `where` does not name it: a dataset's train and test files both have a "line 4".
        source = {"dataset": dataset, "index": where} | ({"file": str(paths[0])} if len(paths) == 1 else {})
        kept.append({"conversations": messages, "source": source})
    if not kept:
        raise ConversionError(nothing_kept(label, dataset, fmt, rejects)
                              + other_formats(records, fmt, dataset))
    # Duplicates are the dedupe option at work (the official cognition_dev repeats 50 of 60), not broken records.
    broken = [reject for reject in rejects if reject["reason"] != DUPLICATE]
    limit = settings.max_reject_ratio
    if len(broken) > limit * len(records):
        raise ConversionError(too_many_rejected(label, dataset, len(records), broken, limit)
                              + other_formats(records, fmt, dataset))
    write_jsonl(rejects_path, rejects)
    write_jsonl(out_path, kept)
    files: str | list[str] = str(paths[0]) if len(paths) == 1 else [str(path) for path in paths]
    report = {"dataset": dataset, "file": files, "format": fmt, "records_in": len(records), "records_out": len(kept),
              "rejected": len(rejects), "duplicates": counts["duplicates"],
              "steps": dict(sorted((rules.rule_counters() | {step: n for step, n in counts.items() if n}).items())),
              "keys_not_read": dict(sorted(not_read.items()))}
    write_json(report_path, report)
    log.info("%s: %d records in, %d converted, %d rejected (see %s); cleaning: %s",
             dataset, len(records), len(kept), len(rejects), rejects_path, report["steps"])
    if counts["invalid_json"]:
        log.warning("%s: %d lines of %s are not valid JSON; skipped to %s", dataset, counts["invalid_json"], label, rejects_path)
    if not_read:
        log.warning("%s: records hold keys format %s does not read, left out of the conversations: %s (the report's "
                    "keys_not_read); map them with columns: / tags: where the format has them, or use a format that "
                    "reads them", dataset, fmt, ", ".join(f"{path} ({count} records)" for path, count in sorted(not_read.items())))
    if shortened:
        log.warning("%s: %d kept records lost an exchange with an empty question or answer (clean.drop_empty_turns: "
                    "the question with all its answers, tool calls and observations), first at %s; their other turns "
                    "are trained", dataset, len(shortened), at(shortened[0]))
    if counts["intro_line_matched_one_line_answer"]:
        log.warning("%s: clean.drop_intro_line matched %d one-line answers and changed nothing there (no first line "
                    "to drop)", dataset, counts["intro_line_matched_one_line_answer"])
    if counts["intro_phrase_not_on_first_line"]:
        log.warning("%s: clean.drop_intro_line's phrase is in %d answers below their first line, which were left "
                    "whole (only a first line holding it is dropped)", dataset, counts["intro_phrase_not_on_first_line"])
    for problem in rules_that_matched_nothing(rules, counts, removed):
        log.warning("%s: %s", dataset, problem)
    if left:
        found = ", ".join(f"{placeholder} ({len(places)} records, first at {at(places[0])})"
                          for placeholder, places in sorted(left.items()))
        fill = ", ".join(f"'{placeholder}': ..." for placeholder in sorted(left))
        log.warning("%s: %d kept records hold template placeholders the model would learn as text: %s. Fill them in "
                    "with clean.replace: {%s} (LLaMA-Factory's identity.json asks for its {{name}} and {{author}})",
                    dataset, counts["records_with_placeholders_left"], found, fill)
    if undeclared:
        log.warning("%s: %d kept records call functions their tools do not declare, so the model learns to call them "
                    "without their description: %s", dataset, counts["records_calling_undeclared_tools"],
                    ", ".join(f"{function} ({len(places)} records, first at {at(places[0])})"
                              for function, places in sorted(undeclared.items())))
    if counts["system_prompt_kept_from_record"]:
        log.warning("%s: %d records have their own system prompt, kept instead of the configured `system:`",
                    dataset, counts["system_prompt_kept_from_record"])
    return report

