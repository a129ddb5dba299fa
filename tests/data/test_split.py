"""merge_and_split on small converted files in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from glmtune.io import read_jsonl, write_jsonl
from helpers.settings import converted_part, split_settings
from glmtune.data.split import Part, given_test_only, layout_problem, merge_and_split, write_given_test


def rows(dataset: str, n: int) -> list[dict[str, Any]]:
    return [{"conversations": [{"role": "user", "content": f"{dataset}-{i}", "loss": False}], "id": f"{dataset}-{i}"}
            for i in range(n)]


def part(tmp_path: Path, dataset: str, split: str, n: int, **kwargs: Any) -> Part:
    path = tmp_path / "in" / f"{dataset}-{split}.jsonl"
    write_jsonl(path, rows(dataset, n))
    return converted_part(dataset=dataset, split=split, path=str(path), **kwargs)


def ids(out: Path, name: str) -> list[str]:
    return [row["id"] for row in read_jsonl(out / f"{name}.jsonl")]


@pytest.mark.parametrize(("n", "val", "test", "sizes"), [
    (20, 0.1, 0.2, (14, 2, 4)),
    (10, 0.25, 0.25, (6, 2, 2)),   # round(2.5) == 2 (round half to even)
    (7, 0.3, 0.0, (5, 2, 0)),      # round(2.1) == 2
    (5, 0.0, 0.0, (5, 0, 0)),
], ids=["20-0.1-0.2", "10-quarters", "7-0.3", "no-ratios"])
def test_all_part_is_cut_by_ratios(tmp_path: Path, n: int, val: float, test: float, sizes: tuple[int, int, int]) -> None:
    out = tmp_path / "out"
    report = merge_and_split([part(tmp_path, "a", "all", n)], out, split_settings(validation_ratio=val, test_ratio=test, seed=1), write_test=True)
    assert report["sizes"] == dict(zip(("train", "validation", "test"), sizes))
    got = {name: ids(out, name) for name in ("train", "validation", "test")}
    assert tuple(len(v) for v in got.values()) == sizes
    everything = [i for v in got.values() for i in v]
    assert sorted(everything) == sorted(r["id"] for r in rows("a", n))  # a partition: nothing lost or repeated
    assert report["datasets"]["a/all"] == {"in": n, "used": n, "train": sizes[0], "validation": sizes[1], "test": sizes[2]}
    assert json.loads((out / "report.json").read_text(encoding="utf-8")) == report


def test_split_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    p = part(tmp_path, "a", "all", 30)
    results = []
    for run, seed in enumerate((7, 7, 8)):
        out = tmp_path / f"out{run}"
        merge_and_split([p], out, split_settings(validation_ratio=0.2, test_ratio=0.2, seed=seed), write_test=True)
        results.append({name: ids(out, name) for name in ("train", "validation", "test")})
    assert results[0] == results[1]
    assert results[0] != results[2]
    assert results[0]["train"] != sorted(results[0]["train"])  # actually shuffled
    # the part is shuffled before it is cut: validation is not simply the file's first rows
    assert set(results[0]["validation"]) != {f"a-{i}" for i in range(6)}
    assert set(results[0]["validation"]) != set(results[2]["validation"])


def test_another_datasets_test_file_leaves_the_test_ratio(tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = merge_and_split([part(tmp_path, "a", "all", 10), part(tmp_path, "b", "test", 3)], out, split_settings(validation_ratio=0.2, test_ratio=0.5, seed=0), write_test=True)
    assert report["sizes"] == {"train": 3, "validation": 2, "test": 8}
    test = ids(out, "test")
    assert sorted(i for i in test if i.startswith("b-")) == ["b-0", "b-1", "b-2"]
    assert sum(i.startswith("a-") for i in test) == 5
    assert report["datasets"]["a/all"] == {"in": 10, "used": 10, "validation": 2, "test": 5, "train": 3}
    assert report["datasets"]["b/test"] == {"in": 3, "used": 3, "test": 3}


def test_a_datasets_own_test_file_wins_over_the_test_ratio(tmp_path: Path) -> None:
    out = tmp_path / "out"
    parts = [part(tmp_path, "a", "all", 10), converted_part("a", "test", part(tmp_path, "a2", "test", 3).path)]
    report = merge_and_split(parts, out, split_settings(validation_ratio=0.2, test_ratio=0.5, seed=0), write_test=True)
    assert report["sizes"] == {"train": 8, "validation": 2, "test": 3}
    assert sorted(ids(out, "test")) == ["a2-0", "a2-1", "a2-2"]
    assert report["datasets"]["a/all"]["test"] == 0


def test_a_datasets_own_validation_file_wins_over_the_validation_ratio(tmp_path: Path) -> None:
    out = tmp_path / "out"
    parts = [part(tmp_path, "a", "all", 10), converted_part("a", "validation", part(tmp_path, "a2", "validation", 2).path),
             part(tmp_path, "b", "all", 10)]
    report = merge_and_split(parts, out, split_settings(validation_ratio=0.5, test_ratio=0.1, seed=0), write_test=True)
    assert report["datasets"]["a/all"] == {"in": 10, "used": 10, "validation": 0, "test": 1, "train": 9}
    assert report["datasets"]["b/all"] == {"in": 10, "used": 10, "validation": 5, "test": 1, "train": 4}
    assert sorted(i for i in ids(out, "validation") if not i.startswith("b-")) == ["a2-0", "a2-1"]


@pytest.mark.parametrize(("layouts", "test_ratio", "dedupe", "alone"), [
    ({"a": ["train", "test"]}, 0.1, False, True),
    ({"a": ["all", "test"]}, 0.1, False, True),            # the dataset's own test file: no share of its all file
    ({"a": ["all", "test"], "b": ["all"]}, 0.1, False, False),  # b's all file gives a test share
    ({"a": ["all", "test"], "b": ["all"]}, 0.0, False, True),
    ({"a": ["all"]}, 0.1, False, False),
    ({"a": ["train"]}, 0.0, False, False),                  # no test file: merge_splits writes the (empty) split
    ({"a": ["train", "test"]}, 0.1, True, False),           # dedupe reaches into it
])
def test_given_test_only_by_layout(layouts: dict[str, list[str]], test_ratio: float, dedupe: bool, alone: bool) -> None:
    assert given_test_only(layouts, test_ratio, dedupe) is alone


def test_the_split_test_of_given_files_alone_is_the_one_split_test_writes(tmp_path: Path) -> None:
    """merge_and_split and write_given_test agree exactly when the test split is the given files alone, and only
    then (another dataset's all file adds its test share)."""
    given = [part(tmp_path, "a", "all", 20), part(tmp_path, "b", "test", 6)]
    merge_and_split(given, tmp_path / "alone", split_settings(validation_ratio=0.1, test_ratio=0.0, seed=5), write_test=True)
    write_given_test(given, tmp_path / "given.jsonl", seed=5)
    assert (tmp_path / "alone/test.jsonl").read_bytes() == (tmp_path / "given.jsonl").read_bytes()
    merge_and_split(given, tmp_path / "mixed", split_settings(validation_ratio=0.1, test_ratio=0.2, seed=5), write_test=True)
    assert sum(i.startswith("a-") for i in ids(tmp_path / "mixed", "test")) == 4


def test_max_samples(tmp_path: Path) -> None:
    out = tmp_path / "out"
    parts = [part(tmp_path, "a", "all", 50, max_samples=10), part(tmp_path, "b", "train", 8, max_samples=3)]
    report = merge_and_split(parts, out, split_settings(validation_ratio=0.2, test_ratio=0.0, seed=3), write_test=True)
    assert report["datasets"]["a/all"] == {"in": 50, "used": 10, "validation": 2, "test": 0, "train": 8}
    assert report["datasets"]["b/train"] == {"in": 8, "used": 3, "train": 3}
    assert report["sizes"] == {"train": 11, "validation": 2, "test": 0}
    train = ids(out, "train")
    assert sum(i.startswith("b-") for i in train) == 3
    assert len(set(train + ids(out, "validation"))) == 13


def test_max_samples_larger_than_the_file(tmp_path: Path) -> None:
    report = merge_and_split([part(tmp_path, "a", "train", 4, max_samples=100)], tmp_path / "out", split_settings(validation_ratio=0.0, test_ratio=0.0, seed=0), write_test=True)
    assert report["sizes"]["train"] == 4


@pytest.mark.parametrize("parts_spec", [
    [("a", "all", 2, 0.5, 0.5)],
    [("a", "test", 5, 0.1, 0.1)],
    [("a", "all", 0, 0.1, 0.1)],
], ids=["ratios-take-everything", "only-test-part", "empty-file"])
def test_empty_train_raises_and_writes_nothing(tmp_path: Path, parts_spec: list[tuple[str, str, int, float, float]]) -> None:
    parts = [part(tmp_path, name, split, n) for name, split, n, _, _ in parts_spec]
    _, _, _, val, test = parts_spec[0]
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="training split is empty"):
        merge_and_split(parts, out, split_settings(validation_ratio=val, test_ratio=test, seed=0), write_test=True)
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize(("ratio", "used"), [(0.5, 5), (2.0, 20), (1.3, 13)], ids=["half", "twice", "1.3"])
def test_sample_ratio_scales_a_dataset_in_the_mix(tmp_path: Path, ratio: float, used: int) -> None:
    out = tmp_path / "out"
    report = merge_and_split([part(tmp_path, "a", "train", 10, sample_ratio=ratio)], out, split_settings(validation_ratio=0.0, test_ratio=0.0, seed=0), write_test=True)
    assert report["datasets"]["a/train"]["used"] == used
    got = ids(out, "train")
    assert len(got) == used and set(got) <= {f"a-{i}" for i in range(10)}
    if ratio >= 1:  # every record at least once: oversampling repeats, never drops
        assert set(got) == {f"a-{i}" for i in range(10)}


@pytest.mark.parametrize("ratio", [2.0, 1.5, 3.0])
def test_oversampling_an_all_file_repeats_only_training_records(tmp_path: Path, ratio: float) -> None:
    # Cutting the repeated list put copies of every test conversation into train (ratio 2: 20 of 20 below).
    out = tmp_path / "out"
    report = merge_and_split([part(tmp_path, "a", "all", 100, sample_ratio=ratio)], out,
                             split_settings(validation_ratio=0.1, test_ratio=0.1, seed=0), write_test=True)
    got = {name: ids(out, name) for name in ("train", "validation", "test")}
    held_out = got["validation"] + got["test"]
    assert len(got["validation"]) == len(got["test"]) == 10 and len(set(held_out)) == 20  # shares of the distinct records
    assert not set(held_out) & set(got["train"])
    assert set(got["train"]) | set(held_out) == {f"a-{i}" for i in range(100)}  # nothing lost
    counts = report["datasets"]["a/all"]
    assert counts["used"] == sum(len(v) for v in got.values())
    assert counts["used"] + counts["held_out_repeats_not_used"] == round(100 * ratio)
    if ratio == int(ratio):  # whole copies: each training record exactly `ratio` times
        assert {got["train"].count(i) for i in set(got["train"])} == {int(ratio)}


@pytest.mark.parametrize("write_test", [True, False], ids=["merged", "split_test-job"])
def test_a_given_held_out_file_is_used_once_per_record(tmp_path: Path, write_test: bool) -> None:
    parts = [part(tmp_path, "a", "train", 10, sample_ratio=2.0), part(tmp_path, "b", "test", 10, sample_ratio=2.0),
             part(tmp_path, "b", "validation", 6, sample_ratio=2.0)]
    out = tmp_path / "out"
    report = merge_and_split(parts, out, split_settings(validation_ratio=0.0, test_ratio=0.0, seed=0), write_test=write_test)
    if not write_test:
        write_given_test(parts, out / "test.jsonl", seed=0)
    assert len(ids(out, "train")) == 20  # the training mix repeats
    assert sorted(ids(out, "test")) == sorted(f"b-{i}" for i in range(10))
    assert sorted(ids(out, "validation")) == sorted(f"b-{i}" for i in range(6))
    assert report["datasets"]["b/test"]["held_out_repeats_not_used"] == 10


def test_cross_dataset_duplicates_are_left_out_and_counted(tmp_path: Path) -> None:
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    write_jsonl(first, rows("a", 4))
    write_jsonl(second, rows("a", 2) + rows("b", 3))  # a-0 and a-1 repeat the first dataset's conversations
    parts = [converted_part("first", "train", str(first)), converted_part("second", "train", str(second))]
    report = merge_and_split(parts, tmp_path / "out", split_settings(validation_ratio=0.0, test_ratio=0.0, seed=0, dedupe_across_datasets=True), write_test=True)
    assert report["datasets"]["second/train"]["cross_dataset_duplicates"] == 2
    assert report["sizes"]["train"] == 7
    kept = merge_and_split(parts, tmp_path / "out2", split_settings(validation_ratio=0.0, test_ratio=0.0, seed=0), write_test=True)
    assert kept["sizes"]["train"] == 9


def test_cross_dataset_dedupe_leaves_out_only_what_an_earlier_dataset_gave(tmp_path: Path) -> None:
    """Records an earlier dataset's max_samples left out are in no split: a later dataset repeating them keeps them
    (a 60-record dataset had lost all 60 for 7 in the splits)."""
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    write_jsonl(first, rows("a", 10))
    write_jsonl(second, rows("a", 10))
    parts = [converted_part("first", "train", str(first), max_samples=3), converted_part("second", "train", str(second))]
    report = merge_and_split(parts, tmp_path / "out", split_settings(validation_ratio=0.0, test_ratio=0.0, seed=0,
                                                                     dedupe_across_datasets=True), write_test=True)
    assert report["datasets"]["second/train"]["cross_dataset_duplicates"] == 3
    assert sorted(ids(tmp_path / "out", "train")) == sorted(f"a-{i}" for i in range(10))  # each once


def test_held_out_conversations_also_trained_on_are_counted_and_warned(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    write_jsonl(train, rows("a", 5))
    write_jsonl(test, rows("a", 2) + rows("b", 3))  # a-0 and a-1 are training conversations too
    parts = [converted_part("x", "train", str(train)), converted_part("y", "test", str(test))]
    with caplog.at_level("WARNING", logger="glmtune.data.split"):
        report = merge_and_split(parts, tmp_path / "out", split_settings(validation_ratio=0.0, test_ratio=0.0, seed=0),
                                 write_test=False)
    assert report["held_out_in_train"] == {"validation": 0, "test": 2}
    assert "2 of the 5 test conversations are also in the training split" in caplog.text
    deduped = merge_and_split(parts, tmp_path / "out2", split_settings(validation_ratio=0.0, test_ratio=0.0, seed=0,
                                                                       dedupe_across_datasets=True), write_test=True)
    assert deduped["held_out_in_train"] == {"validation": 0, "test": 0}


def chat(*texts: str, trained: bool = True) -> dict[str, Any]:
    """A conversation of alternating user / assistant texts."""
    roles = ("user", "assistant")
    return {"conversations": [{"role": roles[at % 2], "content": text, "loss": trained and at % 2 == 1}
                              for at, text in enumerate(texts)], "id": "-".join(texts)}


def test_held_out_prompts_trained_with_another_answer_are_counted_and_warned(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """AdvertiseGen repeats dev prompts with other summaries: a test prompt trained with another answer (or asked in
    the middle of a trained conversation) is counted; the same whole conversation is held_out_in_train's, and a
    prompt only in an untrained (loss false) answer's place is not trained."""
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    write_jsonl(train, [chat("q1", "a1"), chat("q2", "a2", "q3", "a3"), chat("q4", "a4", trained=False), chat("q5", "a5")])
    write_jsonl(test, [chat("q1", "other"), chat("q2", "a2"), chat("q2", "a2", "q3", "other"), chat("q5", "a5"),
                       chat("q4", "other"), chat("q6", "a6"), chat("q2", "other", "q3", "a3")])
    parts = [converted_part("x", "train", str(train)), converted_part("y", "test", str(test))]
    with caplog.at_level("WARNING", logger="glmtune.data.split"):
        report = merge_and_split(parts, tmp_path / "out", split_settings(validation_ratio=0.0, test_ratio=0.0, seed=0),
                                 write_test=False)
    # q1/other, q2/a2 (a2 trained after q2: the same prompt and answer, the conversation differs), q2 a2 q3/other.
    assert report["held_out_prompts_in_train"] == {"validation": 0, "test": 3}
    assert report["held_out_in_train"] == {"validation": 0, "test": 1}  # q5 a5
    assert "3 of the 7 test conversations ask what the training split trains an answer to" in caplog.text


def test_a_layout_without_training_data_is_named() -> None:
    assert layout_problem({"a": ["all"], "b": ["test"]}, 0.0) is None
    assert layout_problem({"a": ["train", "test"]}, 0.0) is None and layout_problem({"a": ["all"]}, 0.05) is None
    assert layout_problem({"a": ["validation", "test"], "b": ["test"]}, 0.05) == (
        "no dataset gives training data (a: test, validation; b: test): give one a `train` file, or an `all` file to "
        "cut by the split ratios")


@pytest.mark.parametrize("layouts", [{"a": ["all"]}, {"a": ["train", "validation"], "b": ["all"]}, {"a": ["train"]}])
def test_a_layout_without_test_data_is_named(layouts: dict[str, list[str]]) -> None:
    problem = layout_problem(layouts, 0.0)
    assert problem is not None and problem.startswith("no dataset gives test data (")
    assert "split.test_ratio 0.0)" in problem and "give one dataset a `test` file" in problem
    assert ("hold out a share of the `all` files" in problem) == ("all" in str(layouts))
    assert (layout_problem(layouts, 0.1) is None) == ("all" in str(layouts))  # a ratio cuts only `all` files


def test_cross_dataset_dedupe_leaves_a_files_own_repeats_to_its_dedupe(tmp_path: Path) -> None:
    """A dataset with `dedupe: false` keeps its repeats; only what an earlier dataset gave is left out (its repeats
    had been dropped too and counted as another dataset's, h18)."""
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    write_jsonl(first, rows("a", 2))
    write_jsonl(second, rows("b", 3) + rows("b", 2) + rows("a", 1))  # b-0, b-1 twice in the file; a-0 the first's
    parts = [converted_part("first", "train", str(first)), converted_part("second", "train", str(second))]
    report = merge_and_split(parts, tmp_path / "out", split_settings(validation_ratio=0.0, test_ratio=0.0, seed=0,
                                                                     dedupe_across_datasets=True), write_test=True)
    assert report["datasets"]["second/train"]["cross_dataset_duplicates"] == 1
    assert sorted(ids(tmp_path / "out", "train")) == ["a-0", "a-1", "b-0", "b-0", "b-1", "b-1", "b-2"]


def test_oversampling_capped_by_max_samples_repeats_training_records_not_held_out_ones(tmp_path: Path) -> None:
    """20 records, sample_ratio 2, max_samples 24, 10 % and 10 % held out: the 4 repeats kept were of the records
    held out, so none was used and train had no repeat (h18)."""
    out = tmp_path / "out"
    report = merge_and_split([part(tmp_path, "a", "all", 20, sample_ratio=2.0, max_samples=24)], out,
                             split_settings(validation_ratio=0.1, test_ratio=0.1, seed=0), write_test=True)
    train, held_out = ids(out, "train"), ids(out, "validation") + ids(out, "test")
    assert len(train) == 20 and len(set(train)) == 16 and not set(held_out) & set(train)
    assert "held_out_repeats_not_used" not in report["datasets"]["a/all"]


def test_a_file_sampled_to_nothing_is_warned_of_and_an_emptied_test_file_named(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A `test` file left with nothing was said to be an `all` file's share rounding to none, though there was no
    `all` file (h18)."""
    parts = [part(tmp_path, "a", "train", 10), part(tmp_path, "b", "test", 3, sample_ratio=0.1)]
    with caplog.at_level("WARNING"), pytest.raises(ValueError, match=r"^the test split is empty: the `test` files "
                                                                      r"\(b/test\) gave none of their 3 records"):
        merge_and_split(parts, tmp_path / "out", split_settings(validation_ratio=0.0, test_ratio=0.0, seed=0),
                        write_test=True)
    assert "b/test: sample_ratio 0.1 of its 3 records rounds to none: the file gives nothing" in caplog.text
    assert "`all`" not in str(caplog.text)


def test_a_test_share_that_rounds_to_none_stops_the_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"the test split is empty: split.test_ratio 0.05 of the 9 records cut from "
                                         r"the `all` files rounds to none"):
        merge_and_split([part(tmp_path, "a", "all", 9)], tmp_path / "out",
                        split_settings(validation_ratio=0.0, test_ratio=0.05, seed=0), write_test=True)
    assert not (tmp_path / "out").exists()


def test_an_empty_test_share_after_max_samples_counts_the_records_cut_not_those_read(tmp_path: Path) -> None:
    """A trial run capped at 9 of 5,000 records: 0.05 of 5,000 is 250, of the 9 cut from, none."""
    with pytest.raises(ValueError, match=r"split.test_ratio 0.05 of the 9 records cut from the `all` files \(of the "
                                         r"5000 read: max_samples, sample_ratio or cross-dataset dedupe left these\)"):
        merge_and_split([part(tmp_path, "a", "all", 5000, max_samples=9)], tmp_path / "out",
                        split_settings(validation_ratio=0.0, test_ratio=0.05, seed=0), write_test=True)


def test_a_held_out_share_that_rounds_to_none_is_warned_of(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    parts = [part(tmp_path, "small", "all", 9), part(tmp_path, "big", "all", 100)]
    with caplog.at_level("WARNING", logger="glmtune.data.split"):
        report = merge_and_split(parts, tmp_path / "out", split_settings(validation_ratio=0.05, test_ratio=0.05, seed=0),
                                 write_test=True)
    assert report["datasets"]["small/all"]["test"] == 0 and report["datasets"]["big/all"]["test"] == 5
    assert "small/all: split.validation_ratio 0.05 of its 9 records rounds to none" in caplog.text
    assert "small/all: split.test_ratio 0.05 of its 9 records rounds to none: it gives the test split nothing" in caplog.text
    assert "big/all" not in caplog.text


@pytest.mark.parametrize("other", [None, ("pre", "train", 9), ("pre", "train", 30), ("zzz", "all", 12)])
def test_another_dataset_never_changes_which_records_a_dataset_holds_out(tmp_path: Path,
                                                                         other: tuple[str, str, int] | None) -> None:
    """Adding a dataset, or editing one (here: its size), before or after it leaves the held-out records of an `all`
    file and the sample of a capped one as they were, so scores of two mixes are on the same conversations."""
    mine = [part(tmp_path, "big", "all", 60), part(tmp_path, "capped", "train", 40, max_samples=7)]
    extra = [] if other is None else [part(tmp_path, *other)]
    out = tmp_path / f"out-{other}"
    merge_and_split(extra + mine, out, split_settings(validation_ratio=0.1, test_ratio=0.1, seed=3), write_test=True)
    got = {name: sorted(i for i in ids(out, name) if i.startswith(("big-", "capped-"))) for name in ("validation", "test")}
    got["train"] = sorted(i for i in ids(out, "train") if i.startswith("capped-"))
    alone = tmp_path / "alone"
    if not alone.exists():
        merge_and_split(mine, alone, split_settings(validation_ratio=0.1, test_ratio=0.1, seed=3), write_test=True)
    expected = {name: sorted(i for i in ids(alone, name) if i.startswith(("big-", "capped-"))) for name in ("validation", "test")}
    expected["train"] = sorted(i for i in ids(alone, "train") if i.startswith("capped-"))
    assert got == expected and len(got["test"]) == 6 and len(got["train"]) == 7


def test_the_held_out_count_is_of_the_test_split_written_by_split_test(tmp_path: Path) -> None:
    """A given test file sampled with max_samples, written by the split_test job: report.json's held_out_in_train
    counts the rows of that file, not of another sample."""
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    write_jsonl(train, rows("a", 40))
    write_jsonl(test, rows("a", 40) + rows("b", 40))  # half of the test file is training conversations
    parts = [converted_part("tr", "train", str(train)), converted_part("te", "test", str(test), max_samples=20)]
    for seed in range(6):
        out = tmp_path / f"out{seed}"
        report = merge_and_split(parts, out, split_settings(validation_ratio=0.0, test_ratio=0.0, seed=seed),
                                 write_test=False)
        write_given_test(parts, out / "test.jsonl", seed=seed)
        written = ids(out, "test")
        assert len(written) == 20
        assert report["held_out_in_train"]["test"] == sum(i.startswith("a-") for i in written)
