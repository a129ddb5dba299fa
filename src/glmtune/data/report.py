"""The data page of the report: what each dataset gave and lost, the split sizes, and the token lengths.

Everything here is read from the stages' own reports (convert: `<part>.report.json` and the rejects beside it;
merge: `results/splits/report.json`; tokenize: `results/tokenized/stats.json`), so the page says exactly what
the cached artifacts hold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from glmtune.data.reasons import ReasonGroup, common_reasons
from glmtune.io import write_text

TOP_REASONS = 3


def _read(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def top_reasons(rejects_path: str | Path, limit: int = TOP_REASONS) -> list[ReasonGroup]:
    """The most frequent kinds of reject reason of one rejects file, with their counts."""
    path = Path(rejects_path)
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as handle:
        return common_reasons((json.loads(line) for line in handle if line.strip()), limit)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(str(cell))}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _datasets_section(converted: Sequence[tuple[str | Path, str | Path]]) -> str:
    rows = []
    for report_path, rejects_path in converted:
        report = _read(report_path)
        steps = ", ".join(f"{name} {count}" for name, count in sorted(report.get("steps", {}).items())) or "-"
        reasons = "; ".join(f"{group.example}{' (numbers vary)' if group.numbers_vary else ''} ({group.count})"
                            for group in top_reasons(rejects_path)) or "-"
        part = Path(report_path).name.removesuffix(".report.json")
        not_read = ", ".join(f"{path} ({count})" for path, count in report.get("keys_not_read", {}).items()) or "-"
        rows.append((report["dataset"], part, report["format"], report["records_in"], report["records_out"],
                     report["rejected"], steps, reasons, not_read))
    header = ("dataset", "file", "format", "records in", "kept", "rejected", "counts (conversion, cleaning)", "top reject reasons",
              "keys not read (records)")
    return "<h2>Datasets</h2>" + _table(header, rows)


def _splits_section(split_report: dict[str, Any]) -> str:
    sizes = _table(("split", "conversations"), sorted(split_report["sizes"].items()))
    keys = ("in", "cross_dataset_duplicates", "used", "held_out_repeats_not_used", "train", "validation", "test")
    rows = [(name, *(counts.get(key, 0) for key in keys)) for name, counts in split_report["datasets"].items()]
    parts = _table(("dataset/file", "in", "already given by an earlier dataset or file (left out)", "used",
                    "held-out repeats not used", "train", "validation", "test"), rows)
    overlap = {name: count for name, count in split_report.get("held_out_in_train", {}).items() if count}
    warning = ("<p><strong>Also in the training split</strong> (the same messages; their scores measure memory): "
               + escape(", ".join(f"{count} {name}" for name, count in overlap.items())) + "</p>") if overlap else ""
    asked = {name: count for name, count in split_report.get("held_out_prompts_in_train", {}).items() if count}
    if asked:
        warning += ("<p><strong>Asked in the training split with another answer</strong> (the same messages before "
                    "the last answer; their scores measure memory): "
                    + escape(", ".join(f"{count} {name}" for name, count in asked.items())) + "</p>")
    return "<h2>Splits</h2>" + sizes + warning + parts


def _rounded(value: Any) -> Any:
    """A length percentile as a person reads it: 40.7, not 40.65000000000002."""
    return round(value, 1) if isinstance(value, float) else value


def _tokens_section(stats: dict[str, Any]) -> str:
    rows, before = [], []
    for name, split in stats["splits"].items():
        length = split.get("length", {})
        kept_cut = split.get("answer_truncated")  # lost, as the tokenize log counts them: dropped ones included
        lost = "-" if kept_cut is None else kept_cut + split["dropped_no_trained_tokens"]
        rows.append((name, split["samples_in"], split["samples"], lost, split["truncated"],
                     split["dropped_no_trained_tokens"], split["tokens"], split["trained_tokens"],
                     *(_rounded(length.get(key, "-")) for key in ("mean", "p50", "p90", "p99", "p100"))))
        whole = split.get("whole_95", {})
        for part, points in split.get("before_truncation", {}).items():
            if points:
                kept = whole.get({"length": "cutoff_len", "prompt": "max_input_length"}.get(part, ""), "-")
                before.append((name, part, *(points[f"p{p}"] for p in (50, 90, 95, 99, 100)), kept))
    header = ("split", "samples in", "samples", "lost answer tokens (dropped ones included)", "truncated",
              "dropped (nothing trained)",
              "tokens", "trained tokens", "mean length", "p50", "p90", "p99", "max")
    limit = (f"<p>template {escape(str(stats['template']))}, cutoff_len {escape(str(stats['cutoff_len']))} tokens"
             + (f" ({escape(str(stats['setting']))})" if stats.get("setting") else "") + "</p>")
    html = "<h2>Tokens</h2>" + limit + _table(header, rows)
    quoted = [(name, token, count) for name, split in stats["splits"].items()
              for token, count in split.get("special_token_text", {}).items()]
    if quoted:
        html += ("<h3>Special tokens' strings in the text</h3><p>Samples whose messages hold the string of a special "
                 "token, encoded as text (not as the token, which could open a turn or end an answer).</p>"
                 + _table(("split", "string", "samples"), quoted))
    if before:
        html += ("<h3>Lengths before truncation</h3><p>prompt: what an evaluation prompt holds, the messages before the last answer and its role "
                 "token (single-turn, the untrained tokens); answer: the trained tokens. "
                 "The limit column keeps 95 % of the samples whole: max_input_length for prompts, cutoff_len (or "
                 "max_input_length + max_output_length + 1) for whole samples.</p>"
                 + _table(("split", "tokens of", "p50", "p90", "p95", "p99", "max", "95 % whole at"), before))
    return html


STYLE = ("<style>body{font-family:sans-serif}table{border-collapse:collapse;margin:0 0 1em}"
         "td,th{border:1px solid #bbb;padding:2px 8px;text-align:right}th{background:#eee}</style>")


def _token_sets_section(token_stats: Sequence[str | Path]) -> str:
    """Runs with tokenize settings of their own train on sets of their own: each set's section, under its folder
    (its settings in the line below the heading), so no run's truncation or drops are left off the page."""
    html = ("<h2>Tokens</h2><p>The runs' tokenize settings make " + str(len(token_stats)) + " tokenized sets; a run "
            "trains on the one its settings give (logs/tokenize/&lt;set&gt;.log; <code>default</code>: the config's "
            "own settings).</p>")
    for path in token_stats:
        section = _tokens_section(_read(path)).removeprefix("<h2>Tokens</h2>").replace("<h3>", "<h4>").replace("</h3>", "</h4>")
        html += f"<h3>{escape(str(Path(path).parent))}</h3>" + section
    return html


def data_report_html(converted: Sequence[tuple[str | Path, str | Path]], split_report: str | Path,
                     token_stats: str | Path | Sequence[str | Path]) -> str:
    """The page as HTML: `converted` is (report.json, rejects.jsonl) per converted file; `token_stats` the
    stats.json of every tokenized set the runs train on (one: the page as it was before runs could have several)."""
    sets = [token_stats] if isinstance(token_stats, (str, Path)) else list(token_stats)
    tokens = _tokens_section(_read(sets[0])) if len(sets) == 1 else _token_sets_section(sets)
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Data</title>" + STYLE + "</head><body>"
            + _datasets_section(converted) + _splits_section(_read(split_report)) + tokens
            + "</body></html>\n")


def write_data_report(converted: Sequence[tuple[str | Path, str | Path]], split_report: str | Path,
                      token_stats: str | Path | Sequence[str | Path], out_path: str | Path) -> None:
    write_text(out_path, data_report_html(converted, split_report, token_stats))
