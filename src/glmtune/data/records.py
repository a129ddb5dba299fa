"""The records of a user's data file: JSON (an array or JSON lines), CSV / TSV, Parquet or Arrow.

The content decides for JSON and Parquet (a JSON array in a `.jsonl` file is common; Parquet starts with its magic
bytes), the extension for CSV / TSV (`.csv`, `.tsv`) and Arrow (`.arrow`, as `datasets.save_to_disk` writes it). Any of
them may be gzip-, bzip2- or xz-compressed (`train.jsonl.gz`, as the Hub ships some; told by the magic bytes): read
inside, the kind told by the name without `.gz` / `.bz2` / `.xz`; zstd is named and refused.
Table rows come back as JSON-like dicts: a table has no absent key, only an empty CSV cell or a Parquet null (a
struct column is the union of every record's keys: EmoLLM's later turns get a null `system`), so those keys are
left out, as a JSON record would leave them; every CSV value is text, and a Parquet value JSON cannot hold (a date, a
decimal, bytes) becomes its text. Each record comes with where it is: "line N" (JSON lines, CSV: the line
the record starts on) or "record N" (an index into a JSON array or a table, from 0). `shards_problem` tells whether a
sharded file (`train-00000-of-00003.parquet`) comes with all its shards.
"""

from __future__ import annotations

import bz2
import csv
import glob
import gzip
import io
import json
import lzma
import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glmtune.repeated_keys import loads as json_loads


class DataFileError(ValueError):
    """A data file cannot be read; the message names the file and the line."""


@dataclass(frozen=True)
class BadLine:
    """A JSON-lines line that is not valid JSON (or a CSV row that does not fit its header), kept in place of its
    record when bad lines are skipped."""

    text: str
    reason: str


def read_records(path: str | Path, encoding: str = "utf-8", skip_bad_lines: bool = False) -> list[tuple[str, Any]]:
    """Return (where, record) pairs from a data file (see the module's docstring for the kinds).

    A UTF-8 BOM and CRLF line ends are accepted; `encoding` applies to the text kinds (Parquet and Arrow hold
    UTF-8). With `skip_bad_lines`, a JSON-lines line that does not parse, or a CSV row with another number of
    fields than its header, comes back as a BadLine (so the caller can reject it and still count it); otherwise
    it raises DataFileError. A JSON array that does not parse, and a top-level JSON object, are always a
    DataFileError: no record in them can be trusted.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(len(ARROW_MAGIC))
    if packed := _compression(head):  # train.jsonl.gz, data.csv.bz2, x.parquet.xz: read inside, as `datasets` does
        raw, suffix = _decompress(path, packed), Path(path.name.removesuffix(packed.extension)).suffix
        if table := _table_kind(suffix, raw[: len(ARROW_MAGIC)]):
            return _table_rows(path, table, raw)
        return _text_records(path, raw, encoding, skip_bad_lines, suffix)
    if table := _table_kind(path.suffix, head):
        return _table_rows(path, table)
    return _text_records(path, path.read_bytes(), encoding, skip_bad_lines, path.suffix)


def _text_records(path: Path, raw: bytes, encoding: str, skip_bad_lines: bool, suffix: str) -> list[tuple[str, Any]]:
    """The records of a text file's bytes (read whole, or decompressed): CSV / TSV by the name's `suffix`, else JSON
    (an array, or lines)."""
    _refuse_binary(path, raw, encoding)
    text = _decode(path, raw, encoding)
    if suffix.lower() in CSV_DELIMITERS:
        return _csv_rows(path, text, CSV_DELIMITERS[suffix.lower()], skip_bad_lines)
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json_loads(text)
        except json.JSONDecodeError as err:
            raise DataFileError(f"{path}: line {err.lineno}: invalid JSON array: {err.msg}") from None
        if not isinstance(data, list):
            raise DataFileError(f"{path}: expected a JSON array or JSON lines")
        return [(f"record {index}", item) for index, item in enumerate(data)]
    if stripped.startswith("{"):
        _refuse_top_level_object(path, text)
    return _json_lines(path, text, skip_bad_lines)


# Tried in this order when the given encoding fails, to name one that reads the whole file (UTF-8 first: other
# encodings' bytes are almost never valid UTF-8, while GBK reads many UTF-8 files, as nonsense).
LIKELY_ENCODINGS = ("utf-8", "gbk", "gb18030", "big5")


def _codec(encoding: str) -> str:
    return "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding


def _decode(path: Path, raw: bytes, encoding: str) -> str:
    try:
        return raw.decode(_codec(encoding))
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        fits = next((name for name in LIKELY_ENCODINGS if name != _codec(encoding).replace("-sig", "")
                     and _decodes(raw, name)), None)
        hint = (f"the whole file decodes as {fits}: set the dataset's `encoding: {fits}` if that is its encoding"
                if fits else "set the dataset's `encoding:` to the file's encoding")
        raise DataFileError(f"{path}: line {line}: cannot decode as {encoding} ({err.reason}); {hint}") from None


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(_codec(encoding))
    except UnicodeDecodeError:
        return False
    return True


_EXPECTED = "expected JSON lines (one record per line) or a JSON array of records: put the records in a JSON array"


def _refuse_top_level_object(path: Path, text: str) -> None:
    """Stop at a JSON object spread over several lines (one record, or records wrapped as {"data": [...]}).

    Read as JSON lines it fails on a property name, or, skipping bad lines, silently keeps the inner records that
    happen to sit on lines of their own. A first line that parses is a JSON-lines record. Otherwise, when the
    text does not parse either, a first line of just "{" (pretty-printed) or a parse that got past the first line
    still marks an object; a parse that fails within the first line is a bad JSON-lines line.
    """
    number = text[: len(text) - len(text.lstrip())].count("\n") + 1
    first = text.lstrip().split("\n", 1)[0].strip()
    try:
        json.loads(first)
        return
    except json.JSONDecodeError:
        pass
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        if first == "{" or err.lineno > number:
            raise DataFileError(f"{path}: line {err.lineno}: top level is a JSON object that does not parse "
                                f"({err.msg}); {_EXPECTED}") from None
        return
    raise DataFileError(f"{path}: line {number}: top level is a JSON object; {_EXPECTED}")


def refuse_lone_wrapper(path: Path, found: list[tuple[str, Any]], fmt: str, reads: Callable[[Any], bool]) -> None:
    """Stop at records wrapped as {"data": [...]} on one line (json.dump's default), which reads as one JSON-lines
    record: the pretty-printed wrapper stops in _refuse_top_level_object.

    A one-record chat file holds its messages as a list of objects too, so the file's only record is refused only
    when its format does not read it and reads one of the list's first items as a record (`reads`): an invalid
    conversation is rejected for its own reason, as any record is."""
    if len(found) != 1 or not found[0][0].startswith("line ") or not isinstance(found[0][1], dict):
        return
    where, record = found[0]
    key = next((key for key, value in record.items()
                if isinstance(value, list) and value and all(isinstance(item, dict) for item in value)), None)
    if key is not None and not reads(record) and any(reads(item) for item in record[key][:3]):
        raise DataFileError(f"{path}: {where}: top level is a JSON object whose {key!r} holds {len(record[key])} "
                            f"objects, not one record that format: {fmt} reads (records wrapped as {{\"{key}\": [...]}} on "
                            f"one line?); {_EXPECTED}")


def _json_lines(path: Path, text: str, skip_bad_lines: bool) -> list[tuple[str, Any]]:
    """The records of a JSON-lines text. Lines end at \\n (or \\r\\n) only: str.splitlines would also split at
    U+2028, U+2029 and U+0085, which JSON strings may hold as they are."""
    records: list[tuple[str, Any]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            records.append((f"line {number}", json_loads(line)))
        except json.JSONDecodeError as err:
            if not skip_bad_lines:
                raise DataFileError(f"{path}: line {number}: invalid JSON: {err.msg} (column {err.colno}); fix the "
                                    f"line, or set on_invalid: skip to write it to the rejects file") from None
            records.append((f"line {number}", BadLine(line, f"invalid JSON: {err.msg} (column {err.colno})")))
    return records


GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
PARQUET_MAGIC = b"PAR1"
ARROW_MAGIC = b"ARROW1"
CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}

# Files that are not text, by their first bytes: what they are, and what to do.
_BINARY_KINDS = ((GZIP_MAGIC, "gzip inside gzip: decompress it (gunzip) and name the file it holds"),
                 (ZSTD_MAGIC, "zstd-compressed (.zst), which is not read: decompress it (zstd -d) and name the file "
                              "it holds, or compress it with gzip, bzip2 or xz"),
                 (b"PK\x03\x04", "a zip archive (an Excel .xlsx workbook is one): extract it, or save the sheet as CSV"))


@dataclass(frozen=True)
class Compression:
    """A compression the standard library reads: its name, a file name's extension for it, its magic bytes and how
    to decompress it."""

    name: str
    extension: str
    magic: bytes
    decompress: Callable[[bytes], bytes]


# bzip2's magic ends in its block size, a digit 1-9.
COMPRESSIONS = (Compression("gzip", ".gz", GZIP_MAGIC, gzip.decompress),
                Compression("xz", ".xz", b"\xfd7zXZ\x00", lzma.decompress),
                *(Compression("bzip2", ".bz2", b"BZh" + str(level).encode(), bz2.decompress) for level in range(1, 10)))


def _compression(head: bytes) -> Compression | None:
    return next((packed for packed in COMPRESSIONS if head.startswith(packed.magic)), None)


def _decompress(path: Path, packed: Compression) -> bytes:
    """The bytes inside a gzip, bzip2 or xz file; one cut short or damaged stops, naming it."""
    try:
        return packed.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as err:
        raise DataFileError(f"{path}: {packed.name}-compressed, but it does not decompress ({err}): a download or copy cut "
                            "short? Download or copy it again") from None


_WIDE_CODECS = ("utf-16", "utf-32", "utf16", "utf32")


def _refuse_binary(path: Path, raw: bytes, encoding: str) -> None:
    """Name what a file that is not text in `encoding` is, before decoding it gives a misleading message.

    A UTF-16 byte order mark (Windows Notepad's "Unicode") names the encoding to set; NUL bytes, which no text in
    a one-byte or multi-byte (UTF-8, GBK, Big5) encoding holds, mark a binary file."""
    if encoding.lower().replace("_", "-").startswith(_WIDE_CODECS):
        return
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataFileError(f"{path}: the file is UTF-16 text (it starts with a UTF-16 byte order mark): set the dataset's "
                            "`encoding: utf-16`, or save it as UTF-8")
    kind = next((what for magic, what in _BINARY_KINDS if raw.startswith(magic)), None)
    if kind or b"\0" in raw[:1 << 16]:
        raise DataFileError(f"{path}: not a text file: " + (kind or "it holds NUL bytes") + "; the data files read are "
                            "JSON, JSON lines, CSV (.csv), TSV (.tsv), Parquet and Arrow (.arrow)")


def _csv_rows(path: Path, text: str, delimiter: str, skip_bad_lines: bool) -> list[tuple[str, Any]]:
    """The rows of a CSV / TSV text under its header line, an empty cell left out; "line N" is where a row starts
    (a quoted cell may span lines)."""
    csv.field_size_limit(1 << 30)  # the default, 128 KiB a cell, stops at one long answer
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return []
        if len(set(header)) < len(header) or not all(name.strip() for name in header):
            raise DataFileError(f"{path}: line 1: the header names each column once, none empty: {header}")
        if len(header) == 1 and (other := next((mark for mark in ";\t|," if mark != delimiter and mark in header[0]), None)):
            raise DataFileError(f"{path}: line 1: the header is one column, {header[0]!r}: the file looks "
                                f"{other!r}-separated" + (" (Excel writes ';' in some locales)" if other == ";" else "")
                                + "; save it " + ("tab-separated as .tsv" if other == "\t" else "comma-separated")
                                + (", or name it .csv" if other == "," else ""))
        records: list[tuple[str, Any]] = []
        start = reader.line_num + 1
        for row in reader:
            where, start = f"line {start}", reader.line_num + 1
            if not row:  # a blank line
                continue
            if len(row) != len(header):
                reason = f"{len(row)} fields where the header has {len(header)}"
                if not skip_bad_lines:
                    raise DataFileError(f"{path}: {where}: {reason}; fix the row, or set on_invalid: skip to write it "
                                        "to the rejects file")
                records.append((where, BadLine(delimiter.join(row), reason)))
                continue
            records.append((where, {name: cell for name, cell in zip(header, row) if cell != ""}))
    except csv.Error as err:
        raise DataFileError(f"{path}: line {reader.line_num}: not valid CSV: {err}") from None
    return records


def _table_kind(suffix: str, head: bytes) -> str | None:
    """"Parquet" or "Arrow" for a table file (by its magic bytes; an Arrow stream, which has none, by `.arrow`)."""
    if head.startswith(PARQUET_MAGIC):
        return "Parquet"
    return "Arrow" if head.startswith(ARROW_MAGIC) or suffix.lower() == ".arrow" else None


def _table_rows(path: Path, kind: str, raw: bytes | None = None) -> list[tuple[str, Any]]:
    """The rows of a Parquet file or an Arrow file / stream (`datasets.save_to_disk` writes streams), read with pyarrow
    from the file, or from its decompressed bytes `raw`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if kind == "Parquet":
            table = pq.read_table(path if raw is None else pa.BufferReader(raw))
        else:
            with pa.memory_map(str(path)) if raw is None else pa.BufferReader(raw) as source:
                is_file = source.read(len(ARROW_MAGIC)) == ARROW_MAGIC
                source.seek(0)
                table = (pa.ipc.open_file(source) if is_file else pa.ipc.open_stream(source)).read_all()
    except (pa.ArrowException, OSError) as err:
        raise DataFileError(f"{path}: cannot read it as {kind}: {err}") from None
    return [(f"record {index}", _json_value(row)) for index, row in enumerate(table.to_pylist())]


def _json_value(value: Any) -> Any:
    """A table value as JSON would hold it: a null key left out; a date, a decimal or bytes become text (bytes decoded
    as UTF-8 where they are)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items() if item is not None}
    if isinstance(value, (list, tuple)):
        return [_json_value(item) for item in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


# save_pretrained / the Hub's shard names: train-00000-of-00003.parquet, model-00001-of-00004.safetensors
SHARD_NAME = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})(?P<suffix>\..+)?$")


def shards_problem(file: Path, given: Iterable[str]) -> str | None:
    """What of a sharded data file's set (`train-00000-of-00003.parquet`) the dataset would leave out: shards beside it
    that none of its files names, or shards missing (a download cut short). Training on one shard of a Hugging Face
    dataset would drop the rest without a word."""
    match = SHARD_NAME.match(file.name)
    if not match:
        return None
    pattern = f"{glob.escape(match['stem'])}-*-of-{match['count']}{glob.escape(match['suffix'] or '')}"
    shards = [other for other in file.parent.glob(pattern) if SHARD_NAME.match(other.name)]
    named = {Path(other).resolve() for other in given}
    if left := sorted(other.name for other in shards if other.resolve() not in named):
        return f"{len(left)} more beside it would be left out ({', '.join(left)})"
    if len(shards) < int(match["count"]):
        return f"only {len(shards)} of its {int(match['count'])} shards are there (a download cut short?)"
    return None
