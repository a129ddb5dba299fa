"""Merge converted datasets into train / validation / test splits."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from glmtune.io import read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Part:
    """One converted file: its dataset, the split it was given for ("all" = split by ratio), and options."""

    dataset: str
    split: str
    path: str
    max_samples: int | None = None
    sample_ratio: float | None = None  # share of the records to use; above 1 repeats them (oversampling)


def _sample(rows: list[Any], part: Part, rng: random.Random) -> list[Any]:
    """max_samples caps, sample_ratio scales (whole copies, then a random remainder)."""
    if part.sample_ratio is not None:
        wanted = round(len(rows) * part.sample_ratio)
        copies, remainder = divmod(wanted, len(rows)) if rows else (0, 0)
        rows = rows * copies + rng.sample(rows, remainder)
    return rows[: part.max_samples] if part.max_samples else rows


def merge_and_split(
    parts: Sequence[Part],
    out_dir: str | Path,
    validation_ratio: float,
    test_ratio: float,
    seed: int,
    dedupe_across_datasets: bool = False,
    write_test: bool = True,
) -> dict[str, Any]:
    """Write out_dir/{train,validation,test}.jsonl and out_dir/report.json.

    Parts given for a named split go there whole; parts marked "all" are shuffled with `seed` and cut by
    ratio, but only for the splits no part was given for (a given test file wins over a test ratio).
    With dedupe_across_datasets, a conversation already seen in an earlier part is left out (and counted),
    before splitting, so no test conversation repeats a training one.
    A test split made of given files alone (no cross-dataset dedupe) is shuffled on its own (given_test_rows), so
    its content never depends on the training data; write_test=False leaves it to write_given_test.
    """
    rng = random.Random(seed)
    given = {part.split for part in parts}
    splits: dict[str, list[Any]] = {name: [] for name in SPLITS}
    report: dict[str, Any] = {"seed": seed, "datasets": {}}
    seen: set[str] = set()
    for part in parts:
        rows = list(read_jsonl(part.path))
        counts = {"in": len(rows)}
        if dedupe_across_datasets:
            unique = []
            for row in rows:
                key = json.dumps(row["conversations"], ensure_ascii=False, sort_keys=True)
                if key not in seen:
                    seen.add(key)
                    unique.append(row)
            counts["cross_dataset_duplicates"] = len(rows) - len(unique)
            rows = unique
        rng.shuffle(rows)
        taken = _sample(rows, part, rng)
        counts["used"] = len(taken)
        if part.split != "all":
            splits[part.split].extend(taken)
            counts[part.split] = len(taken)
        else:
            cuts = {"validation": validation_ratio if "validation" not in given else 0.0,
                    "test": test_ratio if "test" not in given else 0.0}
            start = 0
            for name, ratio in cuts.items():
                size = round(len(taken) * ratio)
                splits[name].extend(taken[start : start + size])
                counts[name] = size
                start += size
            splits["train"].extend(taken[start:])
            counts["train"] = len(taken) - start
        report["datasets"][f"{part.dataset}/{part.split}"] = counts
    if not splits["train"]:
        raise ValueError("the merged training split is empty: check the datasets' files and split ratios")
    independent_test = "test" in given and not dedupe_across_datasets
    for name, rows in splits.items():
        rng.shuffle(rows)  # the test split too: train and validation come out as before test had its own shuffle
        if name == "test" and independent_test:
            rows = given_test_rows(parts, seed)
        if name != "test" or write_test:
            write_jsonl(Path(out_dir) / f"{name}.jsonl", rows)
    report["sizes"] = {name: len(rows) for name, rows in splits.items()}
    write_json(Path(out_dir) / "report.json", report)
    log.info("splits: %s", report["sizes"])
    return report


def given_test_rows(parts: Sequence[Part], seed: int) -> list[Any]:
    """The test split from the parts given for it, shuffled and sampled with its own generator: editing a training
    record leaves it byte for byte the same (and the base model's evaluation cached)."""
    rng = random.Random(f"{seed}:test")
    rows: list[Any] = []
    for part in parts:
        if part.split == "test":
            taken = list(read_jsonl(part.path))
            rng.shuffle(taken)
            rows.extend(_sample(taken, part, rng))
    rng.shuffle(rows)
    return rows


def write_given_test(parts: Sequence[Part], path: str | Path, seed: int) -> int:
    """Write the test split of the parts given for it (the split_test rule); return its size."""
    count = write_jsonl(path, given_test_rows(parts, seed))
    log.info("test split: %d conversations", count)
    return count
