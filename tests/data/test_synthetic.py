"""Tests for the synthetic AdvertiseGen-style dataset generator."""

from __future__ import annotations

import json
import random
import re

from glmtune.data.synthetic import KEY_ORDER, PHRASES, TYPES, generate, make_record, write_advertisegen

CONTENT_RE = re.compile(r"^([^#*]+#[^#*]+)(\*[^#*]+#[^#*]+)*$")


def _attrs(content: str) -> list[tuple[str, str]]:
    return [tuple(pair.split("#")) for pair in content.split("*")]


def test_make_record_shape():
    record = make_record(random.Random(1))
    assert list(record) == ["content", "summary"]
    assert all(isinstance(v, str) and v for v in record.values())


def test_generate_deterministic():
    assert generate(200, 7) == generate(200, 7)
    assert generate(200, 7) != generate(200, 8)
    assert generate(50, 7) == generate(200, 7)[:50]


def test_records_follow_rules():
    records = generate(2000, 3)
    for record in records:
        assert list(record) == ["content", "summary"]
        assert CONTENT_RE.match(record["content"]), record["content"]
        attrs = _attrs(record["content"])
        keys = [key for key, _ in attrs]
        assert keys[0] == "类型" and attrs[0][1] in TYPES
        assert 3 <= len(attrs) <= 6
        assert keys == sorted(keys, key=KEY_ORDER.index) and len(set(keys)) == len(keys)
        opening, closing, allowed = TYPES[attrs[0][1]]
        assert set(keys[1:]) <= set(allowed)
        summary = record["summary"]
        assert summary.startswith(opening) and summary.endswith(closing + "。")
        positions = []
        for key, value in attrs[1:]:
            phrase = PHRASES[key][value]
            assert phrase in summary, (key, value, summary)
            positions.append(summary.index(phrase))
        assert positions == sorted(positions)  # phrases follow the attribute order
        assert 30 <= len(summary) <= 80, summary


def test_summary_is_function_of_content():
    seen: dict[str, str] = {}
    for record in generate(3000, 11):
        assert seen.setdefault(record["content"], record["summary"]) == record["summary"]


def test_vocabulary_is_moderate():
    records = generate(3000, 0)
    chars = set("".join(r["content"] + r["summary"] for r in records))
    assert 50 <= len(chars) <= 400
    assert len({r["content"] for r in records}) > 1000  # attributes really vary


def test_write_advertisegen(tmp_path):
    paths = write_advertisegen(tmp_path / "AdvertiseGen", train_rows=120, dev_rows=30, seed=5)
    assert set(paths) == {"train", "dev"}
    assert paths["train"] == tmp_path / "AdvertiseGen" / "train.json"
    assert paths["dev"] == tmp_path / "AdvertiseGen" / "dev.json"
    contents = {}
    for name, rows in (("train", 120), ("dev", 30)):
        raw = paths[name].read_bytes()
        assert not raw.startswith(b"\xef\xbb\xbf")
        assert b"\r" not in raw and raw.endswith(b"\n")
        text = raw.decode("utf-8")
        assert "\\u" not in text  # ensure_ascii=False: Chinese written as-is
        lines = text.split("\n")[:-1]
        assert len(lines) == rows
        for line in lines:
            record = json.loads(line)
            assert list(record) == ["content", "summary"]
            assert line == json.dumps(record, ensure_ascii=False)
            assert CONTENT_RE.match(record["content"])
        contents[name] = lines
    assert contents["dev"] != contents["train"][:30]
    assert not list((tmp_path / "AdvertiseGen").glob("*.tmp"))  # no temp files left behind


def test_dev_records_are_never_training_ones(tmp_path):
    """The default job's test split must be unseen: with independent draws 19 of its 299 repeated a training record."""
    paths = write_advertisegen(tmp_path, train_rows=3000, dev_rows=300, seed=0)
    train, dev = ([json.loads(line)["content"] for line in paths[name].read_text(encoding="utf-8").splitlines()]
                  for name in ("train", "dev"))
    assert len(dev) == 300 and not set(dev) & set(train)
    assert sum(c in set(train) for c in (r["content"] for r in generate(300, 1))) > 0  # what the exclusion removes


def test_write_advertisegen_byte_identical(tmp_path):
    first = write_advertisegen(tmp_path / "a", 100, 20, seed=0)
    second = write_advertisegen(tmp_path / "b", 100, 20, seed=0)
    other = write_advertisegen(tmp_path / "c", 100, 20, seed=1)
    for name in ("train", "dev"):
        assert first[name].read_bytes() == second[name].read_bytes()
        assert first[name].read_bytes() != other[name].read_bytes()
    # Rewriting in place replaces the files with the same bytes.
    before = first["train"].read_bytes()
    write_advertisegen(tmp_path / "a", 100, 20, seed=0)
    assert first["train"].read_bytes() == before
