"""Converting and tokenizing the real 5000-row AdvertiseGen train file takes seconds (printed; generous bound)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import shared_data

from glmtune.data.convert import convert_file
from helpers.settings import convert_settings
from helpers.official_tokenizers import load_glm4_tokenizer
from glmtune.tokenize.splits import tokenize_split


def test_convert_and_tokenize_real_advertisegen_in_seconds(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    raw = shared_data("AdvertiseGen/train.json")
    tokenizer = load_glm4_tokenizer(shared_data("tokenizers/glm-4-9b-chat/tokenizer.model").parent)
    start = time.perf_counter()
    report = convert_file(raw, tmp_path / "c.jsonl", tmp_path / "r.jsonl", tmp_path / "p.json", "advertisegen", "adgen", convert_settings())
    converted = time.perf_counter()
    stats = tokenize_split(tmp_path / "c.jsonl", tmp_path / "tok", tokenizer, "glm4", 128 + 256 + 1)
    done = time.perf_counter()
    with capsys.disabled():
        print(f"\nAdvertiseGen train ({report['records_in']} rows): convert {converted - start:.2f} s, "
              f"tokenize {done - converted:.2f} s; {json.dumps(stats['length'])}")
    assert report["records_out"] == 5000 and stats["samples"] == 5000 and stats["truncated"] == 0
    # The data README's profile of these rows with this tokenizer: a whole sample is ~116 tokens on average, max 241
    # (our count adds the template's 7 special/newline tokens per sample at most).
    assert 110 <= stats["length"]["mean"] <= 125 and stats["length"]["p100"] <= 250
    assert done - start < 60
