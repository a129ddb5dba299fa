"""Data files that are tables (CSV, TSV, Parquet, Arrow) and files that are not text: read_records on small files, and
every real file of ../shared/data written as a table converting to the conversations its JSON gives."""

from __future__ import annotations

import bz2
import csv
import datetime
import gzip
import json
import lzma
import zipfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import shared_data

from glmtune.data.convert import ConversionError, convert_file
from glmtune.data.records import BadLine, DataFileError, read_records
from glmtune.io import read_jsonl
from helpers.settings import convert_settings

ROWS = [{"instruction": "写一首诗", "input": "", "output": "床前明月光，\n疑是地上霜。"},
        {"instruction": "翻译", "input": "hello", "output": "你好"}]


def write_csv(path: Path, rows: list[dict[str, Any]], encoding: str = "utf-8", delimiter: str = ",") -> Path:
    keys = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="", encoding=encoding) as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_csv_rows_name_the_line_they_start_on_and_leave_empty_cells_out(tmp_path: Path) -> None:
    # the first answer's quoted cell spans two lines, so the second row starts on line 4, not 3
    records = read_records(write_csv(tmp_path / "data.csv", ROWS))
    assert records == [("line 2", {"instruction": "写一首诗", "output": "床前明月光，\n疑是地上霜。"}),
                       ("line 4", ROWS[1])]


def test_a_csv_cell_longer_than_the_csv_modules_default_limit_is_read(tmp_path: Path) -> None:
    long = "很长的回答。" * 40000  # 240,000 characters: csv's default field limit is 131,072
    records = read_records(write_csv(tmp_path / "long.csv", [{"instruction": "写长文", "output": long}]))
    assert records == [("line 2", {"instruction": "写长文", "output": long})]


def test_a_gbk_tsv_with_crlf_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "data.tsv"
    path.write_bytes("instruction\tinput\toutput\r\n翻译\thello\t你好\r\n".encode("gbk"))
    assert read_records(path, "gbk") == [("line 2", ROWS[1])]
    with pytest.raises(DataFileError, match="decodes as gbk"):
        read_records(path)


def test_a_utf8_bom_csv_keeps_its_first_column_name(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "instruction,output\r\n翻译,你好\r\n".encode())
    assert read_records(path) == [("line 2", {"instruction": "翻译", "output": "你好"})]


def test_a_csv_row_that_does_not_fit_its_header_stops_or_is_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("instruction,output\n翻译,你好\n翻译,你好,多余\n\n问,答\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"data.csv: line 3: 3 fields where the header has 2; fix the row"):
        read_records(path)
    assert read_records(path, skip_bad_lines=True) == [
        ("line 2", {"instruction": "翻译", "output": "你好"}),
        ("line 3", BadLine("翻译,你好,多余", "3 fields where the header has 2")),
        ("line 5", {"instruction": "问", "output": "答"})]


@pytest.mark.parametrize("header", ["instruction,instruction", "instruction,,output"])
def test_a_csv_header_naming_a_column_twice_or_not_at_all_stops(tmp_path: Path, header: str) -> None:
    path = tmp_path / "data.csv"
    path.write_text(header + "\n" + ",".join("x" * len(header.split(","))) + "\n", encoding="utf-8")
    with pytest.raises(DataFileError, match="line 1: the header names each column once, none empty"):
        read_records(path)


def test_a_table_without_rows_stops_its_conversion(tmp_path: Path) -> None:
    (tmp_path / "header.csv").write_text("instruction,input,output\n", encoding="utf-8")
    pq.write_table(pa.Table.from_pylist([], schema=pa.schema([("instruction", pa.string())])), tmp_path / "empty.parquet")
    for name in ("header.csv", "empty.parquet"):
        with pytest.raises(ConversionError, match=rf"{name}: no records: .* a table without rows"):
            convert(tmp_path, tmp_path / name, "alpaca")


@pytest.mark.parametrize(("name", "text", "says"), [
    ("excel.csv", "instruction;output\n翻译;你好\n", "looks ';'-separated (Excel writes ';' in some locales); save it "
                                                      "comma-separated"),
    ("tabs.csv", "instruction\toutput\n翻译\t你好\n", "looks '\\t'-separated; save it tab-separated as .tsv"),
    ("commas.tsv", "instruction,output\n翻译,你好\n", "looks ','-separated; save it comma-separated, or name it .csv"),
], ids=["semicolons", "tabs-in-csv", "commas-in-tsv"])
def test_a_table_with_another_separator_says_which(tmp_path: Path, name: str, text: str, says: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(DataFileError) as err:
        read_records(tmp_path / name)
    assert str(err.value).startswith(f"{tmp_path / name}: line 1: the header is one column, ")
    assert str(err.value).endswith(f": the file {says}")


def test_parquet_by_its_content_and_arrow_stream_and_file_by_extension(tmp_path: Path) -> None:
    table = pa.Table.from_pylist(ROWS)
    pq.write_table(table, tmp_path / "data.bin")  # the extension does not matter: the magic bytes decide
    for kind, name in ((pa.ipc.new_stream, "stream.arrow"), (pa.ipc.new_file, "file.arrow")):
        with pa.OSFile(str(tmp_path / name), "wb") as sink, kind(sink, table.schema) as writer:
            writer.write_table(table)
    for name in ("data.bin", "stream.arrow", "file.arrow"):
        assert read_records(tmp_path / name) == [("record 0", ROWS[0]), ("record 1", ROWS[1])], name


def test_parquet_nulls_are_absent_keys_and_values_json_lacks_are_text(tmp_path: Path) -> None:
    rows = [{"conversation": [{"system": "s", "input": "i", "output": "o"}, {"input": "i2", "output": "o2"}],
             "day": datetime.date(2024, 5, 1), "blob": b"\xe4\xbd\xa0"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data.parquet")
    (_, record), = read_records(tmp_path / "data.parquet")
    assert record["conversation"][1] == {"input": "i2", "output": "o2"}  # the struct's null `system` is left out
    assert (record["day"], record["blob"]) == ("2024-05-01", "你")


def test_a_broken_parquet_file_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1" + b"\x00" * 20)
    with pytest.raises(DataFileError, match=r"data.parquet: cannot read it as Parquet: "):
        read_records(path)


@pytest.mark.parametrize(("content", "says"), [
    (gzip.compress(gzip.compress(b"[]")), "not a text file: gzip inside gzip: decompress it"),
    (None, "not a text file: a zip archive (an Excel .xlsx workbook is one)"),
    (b'{"a": 1}\n\x00\x01\x02', "not a text file: it holds NUL bytes"),
    (bytes.fromhex("28b52ffd2000110000") + b"\x00" * 8, "not a text file: zstd-compressed (.zst), which is not read: "
                                                         "decompress it (zstd -d)"),
    ('[{"a": "你好"}]'.encode("utf-16"), "the file is UTF-16 text (it starts with a UTF-16 byte order mark): set the "
                                         "dataset's `encoding: utf-16`"),
], ids=["gzip", "xlsx", "nul", "zstd", "utf-16"])
def test_a_file_that_is_not_text_says_what_it_is(tmp_path: Path, content: bytes | None, says: str) -> None:
    path = tmp_path / "data.json"
    if content is None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("xl/workbook.xml", "<workbook/>")
    else:
        path.write_bytes(content)
    with pytest.raises(DataFileError, match=f"data.json: {says}".replace("(", r"\(").replace(")", r"\)")):
        read_records(path)


def test_utf16_reads_with_its_encoding(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(json.dumps(ROWS, ensure_ascii=False).encode("utf-16"))
    assert [record for _, record in read_records(path, "utf-16")] == ROWS


def convert(tmp_path: Path, raw: Path, fmt: str) -> tuple[list[Any], int]:
    out = tmp_path / f"{raw.name}.conv.jsonl"
    report = convert_file(raw, out, tmp_path / f"{raw.name}.rejects.jsonl", tmp_path / f"{raw.name}.report.json", fmt,
                          "real", convert_settings(on_invalid="skip"))
    return [row["conversations"] for row in read_jsonl(out)], report["rejected"]


# Real files in each format; flat ones (every value a string) are written as CSV too.
REAL = [("AdvertiseGen/dev.json", "advertisegen"), ("AdvertiseGen/dev.glm4_messages.jsonl", "glm4"),
        ("chatglm3/cognition_dev.json", "chatglm3"), ("EmoLLM/tiangou.json", "emollm"),
        ("EmoLLM/self_cognition_EmoLLM.json", "alpaca"), ("llamafactory/alpaca_zh_demo.json", "alpaca"),
        ("llamafactory/glaive_toolcall_zh_demo.json", "sharegpt")]


@pytest.mark.parametrize(("relative", "fmt"), REAL, ids=[relative.split("/")[1] for relative, _ in REAL])
def test_a_real_file_as_a_table_converts_to_what_its_json_gives(tmp_path: Path, relative: str, fmt: str) -> None:
    raw = shared_data(relative)
    rows = [record for _, record in read_records(raw)]
    expected, rejected = convert(tmp_path, raw, fmt)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data.parquet")
    assert convert(tmp_path, tmp_path / "data.parquet", fmt) == (expected, rejected)
    if all(isinstance(value, str) for row in rows for value in row.values()):
        assert convert(tmp_path, write_csv(tmp_path / "data.csv", rows), fmt) == (expected, rejected)


def test_shards_given_as_a_list_convert_as_one_file_naming_each_records_file(tmp_path: Path) -> None:
    """A Hugging Face dataset's Parquet shards read as one file: the same conversations, one dedupe over all of them;
    a record's place names its shard."""
    raw = shared_data("llamafactory/alpaca_zh_demo.json")
    rows = [record for _, record in read_records(raw)]
    shards = [tmp_path / f"train-{index:05d}-of-00003.parquet" for index in range(3)]
    for index, shard in enumerate(shards):
        pq.write_table(pa.Table.from_pylist(rows[index * 400:(index + 1) * 400]), shard)
    expected, rejected = convert(tmp_path, raw, "alpaca")
    out = tmp_path / "shards.jsonl"
    report = convert_file(shards, out, tmp_path / "shards.rejects.jsonl", tmp_path / "shards.report.json", "alpaca", "real",
                          convert_settings(on_invalid="skip"))
    assert [row["conversations"] for row in read_jsonl(out)] == expected and report["rejected"] == rejected
    assert report["file"] == [str(shard) for shard in shards]
    assert next(read_jsonl(out))["source"]["index"] == f"{shards[0]}: record 0"
    assert all(reject["where"].startswith(str(tmp_path / "train-")) for reject in read_jsonl(tmp_path / "shards.rejects.jsonl"))
    pq.write_table(pa.Table.from_pylist([{"instruction": "q", "output": 5}]), shards[1])  # a bad record in shard 2
    with pytest.raises(ConversionError, match=rf"^{shards[1]}: record 0: 'output' is a number, not a string"):
        convert_file(shards, out, tmp_path / "r.jsonl", tmp_path / "r.json", "alpaca", "real", convert_settings())


def test_a_datasets_save_to_disk_arrow_file_converts_like_its_json(tmp_path: Path) -> None:
    """EmoLLM turns as `datasets` stores them: the later turns' `system` is null in the struct."""
    datasets = pytest.importorskip("datasets")
    raw = shared_data("EmoLLM/data.json")
    rows = [record for _, record in read_records(raw)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    arrow, = (tmp_path / "saved").glob("*.arrow")
    assert convert(tmp_path, arrow, "emollm") == convert(tmp_path, raw, "emollm")


COMPRESSIONS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


@pytest.mark.parametrize("extension", list(COMPRESSIONS))
@pytest.mark.parametrize("name", ["dev.json", "dev.jsonl", "dev.csv", "dev.parquet"])
def test_a_compressed_file_reads_as_the_file_inside(tmp_path: Path, name: str, extension: str) -> None:
    """The real AdvertiseGen dev file as the Hub ships some data (train.jsonl.gz), or bzip2 / xz-compressed: the
    records of the plain file."""
    plain = tmp_path / name
    rows = [row for _, row in read_records(shared_data("AdvertiseGen/dev.json"))]
    if name.endswith(".csv"):
        write_csv(plain, rows)
    elif name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), plain)
    else:
        plain.write_bytes(shared_data("AdvertiseGen/dev.json").read_bytes())
    packed = tmp_path / "packed" / f"{name}{extension}"
    packed.parent.mkdir()
    packed.write_bytes(COMPRESSIONS[extension](plain.read_bytes()))
    assert read_records(packed) == read_records(plain) and len(read_records(packed)) == 1070


def test_a_compressed_file_cut_short_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"content": "a", "summary": "b"}\n' * 1000)[:100])
    with pytest.raises(DataFileError, match=r"train.jsonl.gz: gzip-compressed, but it does not decompress \(.*\): a download"):
        read_records(path)
    path = tmp_path / "train.jsonl.xz"
    path.write_bytes(lzma.compress(b'{"content": "a", "summary": "b"}\n' * 1000)[:100])
    with pytest.raises(DataFileError, match=r"train.jsonl.xz: xz-compressed, but it does not decompress \(.*\): a download"):
        read_records(path)
