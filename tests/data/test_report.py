"""The report's data page, from the stages' own reports of a real small run."""

from __future__ import annotations

import json
import re
from pathlib import Path

from glmtune.data.report import top_reasons, write_data_report


def _cells(html: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first`."""
    row = re.search(rf"<tr><td>{re.escape(first)}</td>(.*?)</tr>", html)
    assert row, f"no row {first!r}"
    return [first, *re.findall(r"<td>(.*?)</td>", row.group(1))]


def test_top_reasons_counts_and_orders(tmp_path: Path) -> None:
    rejects = tmp_path / "r.jsonl"
    rows = [{"where": f"line {n}", "reason": reason} for n, reason in enumerate(["b", "a", "b", "c", "b", "a"])]
    rejects.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    assert [(group.example, group.count, group.first_at) for group in top_reasons(rejects, 2)] == [
        ("b", 3, "line 0"), ("a", 2, "line 1")]
    assert top_reasons(tmp_path / "absent.jsonl") == []


def test_reasons_that_differ_only_in_their_numbers_are_one_kind(tmp_path: Path) -> None:
    """51 answers too short, each with its own length, are one cause, not 51 (min_answer_chars on real EmoLLM
    self-cognition data: the top three kinds had covered 13 of the 51)."""
    rejects = tmp_path / "r.jsonl"
    rows = [{"where": f"record {n}", "reason": f"cleaning: an answer has {50 + n % 9} characters, fewer than "
             "min_answer_chars 60"} for n in range(51)]
    rows += [{"where": "record 99", "reason": "missing key 'output'"}] * 2
    rejects.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    first, second = top_reasons(rejects)
    assert (first.count, first.first_at, first.numbers_vary) == (51, "record 0", True)
    assert str(first) == ("51 x cleaning: an answer has 50 characters, fewer than min_answer_chars 60 (numbers vary) "
                          "(first at record 0)")
    assert str(second) == "2 x missing key 'output' (first at record 99)"


def test_the_page_holds_what_the_stages_reported(small_run: dict[str, Path], tmp_path: Path) -> None:
    root = small_run["root"]
    converted = [(root / f"{name}.report.json", root / f"{name}.rejects.jsonl") for name in ("train", "dev")]
    out = tmp_path / "data.html"
    write_data_report(converted, root / "splits" / "report.json", small_run["tokenized"] / "stats.json", out)
    html = out.read_text(encoding="utf-8")
    report = json.loads((root / "train.report.json").read_text(encoding="utf-8"))
    row = _cells(html, "adgen")
    assert row[3:6] == [str(report["records_in"]), str(report["records_out"]), str(report["rejected"])]
    sizes = json.loads((root / "splits" / "report.json").read_text(encoding="utf-8"))["sizes"]
    assert _cells(html, "train")[:2] == ["train", str(sizes["train"])]
    stats = json.loads((small_run["tokenized"] / "stats.json").read_text(encoding="utf-8"))["splits"]["train"]
    tokens_table = html.split("<h2>Tokens</h2>")[1].split("<h3>")[0]
    tokens = re.findall(r"<tr><td>train</td>(.*?)</tr>", tokens_table)[0]
    assert re.findall(r"<td>(.*?)</td>", tokens)[:5] == [
        str(stats["samples_in"]), str(stats["samples"]), str(stats["answer_truncated"] + stats["dropped_no_trained_tokens"]),
        str(stats["truncated"]), str(stats["dropped_no_trained_tokens"])]
    before = stats["before_truncation"]["length"]  # lengths before truncation, with the limit keeping 95 % whole
    assert _cells(html, "train</td><td>length")[1:] == [*(str(before[f"p{p}"]) for p in (50, 90, 95, 99, 100)),
                                                      str(stats["whole_95"]["cutoff_len"])]


def test_the_split_table_shows_what_each_file_lost_before_its_cut() -> None:
    from glmtune.data.report import _splits_section

    report = {"sizes": {"train": 5, "validation": 0, "test": 0}, "held_out_in_train": {},
              "datasets": {"c/train": {"in": 71, "cross_dataset_duplicates": 71, "used": 0, "train": 0},
                           "e/all": {"in": 4, "used": 4, "held_out_repeats_not_used": 2, "train": 5}}}
    html = _splits_section(report)
    assert "already given by an earlier dataset or file (left out)" in html and "held-out repeats not used" in html
    assert _cells(html, "c/train")[1:] == ["71", "71", "0", "0", "0", "0", "0"]
    assert _cells(html, "e/all")[1:] == ["4", "0", "4", "2", "5", "0", "0"]


def test_held_out_conversations_trained_on_are_shown() -> None:
    from glmtune.data.report import _splits_section

    report = {"sizes": {"train": 5, "validation": 0, "test": 5}, "datasets": {},
              "held_out_in_train": {"validation": 0, "test": 2}}
    assert "Also in the training split</strong> (the same messages; their scores measure memory): 2 test" in \
        _splits_section(report)
    assert "Also in the training split" not in _splits_section({**report, "held_out_in_train": {"test": 0}})
    asked = _splits_section({**report, "held_out_prompts_in_train": {"validation": 1, "test": 0}})
    assert "Asked in the training split with another answer</strong> (the same messages before the last answer; " \
        "their scores measure memory): 1 validation</p>" in asked


def test_special_tokens_strings_the_text_held_are_shown() -> None:
    from glmtune.data.report import _tokens_section

    split = {"samples_in": 3, "samples": 3, "truncated": 0, "dropped_no_trained_tokens": 0, "tokens": 30, "trained_tokens": 9}
    stats = {"template": "glm4", "cutoff_len": 64, "splits": {"train": {**split, "special_token_text": {"<|endoftext|>": 2}},
                                                               "validation": {**split, "special_token_text": {}}}}
    html = _tokens_section(stats)
    assert "Special tokens' strings in the text" in html and "<tr><td>train</td><td>&lt;|endoftext|&gt;</td><td>2</td></tr>" in html
    assert "Special tokens' strings" not in _tokens_section({**stats, "splits": {"validation": stats["splits"]["validation"]}})


def test_every_tokenized_set_the_runs_train_on_has_its_section(small_run: dict[str, Path], tmp_path: Path) -> None:
    """A run with tokenize settings of its own (cutoff_len 96: 17 % of its samples dropped) trained on a set the page
    never showed. One set: the page as before (a finished job's page and exports stay as they are)."""
    root = small_run["root"]
    converted = [(root / f"{name}.report.json", root / f"{name}.rejects.jsonl") for name in ("train", "dev")]
    stats = json.loads((small_run["tokenized"] / "stats.json").read_text(encoding="utf-8"))
    other = tmp_path / "tokenized" / "t1234" / "stats.json"
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps({**stats, "cutoff_len": 96, "splits": {"train": {**stats["splits"]["train"], "samples": 7}}}))
    one, both = tmp_path / "one.html", tmp_path / "both.html"
    write_data_report(converted, root / "splits" / "report.json", small_run["tokenized"] / "stats.json", one)
    write_data_report(converted, root / "splits" / "report.json", [small_run["tokenized"] / "stats.json"], tmp_path / "list.html")
    assert (tmp_path / "list.html").read_bytes() == one.read_bytes()
    write_data_report(converted, root / "splits" / "report.json", [small_run["tokenized"] / "stats.json", other], both)
    html = both.read_text(encoding="utf-8")
    assert "The runs' tokenize settings make 2 tokenized sets" in html
    first, second = html.split("<h3>")[1:3]
    assert first.startswith(f"{small_run['tokenized']}</h3>") and second.startswith(f"{other.parent}</h3><p>template glm4, cutoff_len 96 tokens")
    assert _cells("<tr>" + second.split("<tr>", 2)[2], "train")[2] == "7"
