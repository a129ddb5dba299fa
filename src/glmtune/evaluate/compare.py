"""The comparison of evaluated models: metrics.json, a Markdown table a person reads first, and the same as HTML."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from glmtune.io import write_json, write_text

METRIC_LABELS = {
    "rouge-1": "ROUGE-1 (F×100, jieba)", "rouge-2": "ROUGE-2 (F×100, jieba)", "rouge-l": "ROUGE-L (F×100, jieba)",
    "bleu-4": "BLEU-4 (ChatGLM3 demo: jieba, 0–1)", "bleu-4-char": "BLEU-4 (LLaMA-Factory: characters, ×100)",
}


def metrics_rows(scores: dict[str, dict[str, Any]]) -> list[list[str]]:
    """The comparison table as rows of cells: a header, then one row per metric and per count."""
    names = list(scores)
    rows = [["metric", *names]]
    rows += [[label, *(f"{scores[n][key]:.4g}" for n in names)] for key, label in METRIC_LABELS.items()]
    rows += [[key, *(str(scores[n].get(key, "")) for n in names)]
             for key in ("num_samples", "num_empty_predictions", "samples_per_second")]
    return rows


def compare(scores: dict[str, dict[str, Any]], metrics_path: str | Path, table_path: str | Path,
            html_path: str | Path | None = None) -> None:
    """metrics.json with every model's scores, a Markdown table a person reads first, and the same table as HTML
    (what `snakemake --report` shows inline; it only offers Markdown as a download)."""
    write_json(metrics_path, scores)
    header, *body = metrics_rows(scores)
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    write_text(table_path, "\n".join(lines) + "\n")
    if html_path is not None:
        cells = "".join(f"<th>{escape(cell)}</th>" for cell in header)
        rows = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>\n" for row in body)
        write_text(
            html_path, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>glmtune metrics</title>"
            "<style>table{border-collapse:collapse;font-family:sans-serif}td,th{border:1px solid #999;padding:4px 10px}"
            "td+td{text-align:right}</style></head>\n"
            f"<body><table>\n<tr>{cells}</tr>\n{rows}</table></body></html>\n")
