"""The comparison of evaluated models (the base and every run): metrics.json, a Markdown table a person reads first,
and the same as HTML. A run's row adds its training: final losses, trainable parameters, real tokens/s, peak memory
and wall time."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from html import escape
from pathlib import Path
from typing import Any

from glmtune.io import read_jsonl, write_json, write_text

METRIC_LABELS = {
    "rouge-1": "ROUGE-1 (F×100, jieba)", "rouge-2": "ROUGE-2 (F×100, jieba)", "rouge-l": "ROUGE-L (F×100, jieba)",
    "bleu-4": "BLEU-4 (ChatGLM3 demo: jieba, 0–1)", "bleu-4-char": "BLEU-4 (LLaMA-Factory: characters, ×100)",
}


def _number(value: Any, fmt: str = ".4g") -> str:
    return "" if value is None else format(value, fmt)


def _memory(row: dict[str, Any]) -> str:
    if row.get("peak_gpu_memory_gb") is not None:
        return f"{row['peak_gpu_memory_gb']:.2f} GB GPU"
    if row.get("max_rss_mb") is not None:
        return f"{row['max_rss_mb'] / 1024:.2f} GB RSS"
    return ""


def _wall(seconds: Any) -> str:
    if seconds is None:
        return ""
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


# Column -> how a model's metrics.json entry shows in it ("" where it does not apply, e.g. training for the base).
COLUMNS: dict[str, Callable[[dict[str, Any]], str]] = {
    "method": lambda row: row.get("method", ""),
    **{label: (lambda key: lambda row: _number(row.get(key)))(key) for key, label in METRIC_LABELS.items()},  # noqa: B023 (bound by the call)
    "final train loss": lambda row: _number(row.get("final_train_loss")),
    "final validation loss": lambda row: _number(row.get("validation_loss")),
    "trainable parameters": lambda row: "" if row.get("trainable_parameters") is None else f"{row['trainable_parameters']:,}",
    "real tokens/s": lambda row: _number(row.get("tokens_per_second"), ".0f"),
    "peak memory": _memory,
    "training wall time": lambda row: _wall(row.get("train_wall_s")) + (" (reused)" if row.get("reused") else "")
    + (f" ({row['trained_by']}'s training)" if row.get("trained_by") else ""),
    "test samples": lambda row: str(row.get("num_samples", "")),
    "empty predictions": lambda row: str(row.get("num_empty_predictions", "")),
    # What the length limits took from the test set (glmtune.evaluate.prompts): cut prompts lost their question's
    # end, and answers longer than max_new_tokens could not be matched whole.
    "prompts cut": lambda row: str(row.get("prompts_cut", "")),
    "answers over max_new_tokens": lambda row: str(row.get("answers_longer_than_max_new_tokens", "")),
}


def training_record(log_path: str | Path, summary_path: str | Path, benchmark_path: str | Path) -> dict[str, Any]:
    """A run's training numbers: the last logged training loss, the real tokens/s of the logged steps, the
    trainer's summary (trainable parameters, final validation loss, the training time of all the run's jobs, peak GPU
    memory where trained on a GPU) and the training job's max RSS from Snakemake's benchmark file; a run reused from
    its finished checkpoint says so."""
    rows = list(read_jsonl(log_path))
    losses = [row["loss"] for row in rows if "loss" in row]
    speeds = [row["tokens_per_second"] for row in rows if "tokens_per_second" in row]
    # Tokens over the time they took: each row's tokens / its rate is its training time. A mean of the rates would
    # weigh a short row as much as a long one. Logs from before rows held their tokens: the mean.
    timed = [(row["tokens"], row["tokens"] / row["tokens_per_second"]) for row in rows if row.get("tokens_per_second")
             and "tokens" in row]
    speed = sum(t for t, _ in timed) / sum(s for _, s in timed) if timed else sum(speeds) / len(speeds) if speeds else None
    summary = json.loads(Path(summary_path).read_text(encoding="utf-8"))
    with open(benchmark_path, encoding="utf-8", newline="") as handle:
        bench = next(csv.DictReader(handle, delimiter="\t"))
    record = {
        "final_train_loss": losses[-1] if losses else None,
        "validation_loss": summary.get("validation_loss"),
        "trainable_parameters": summary.get("trainable_parameters"),
        "tokens_per_second": round(speed, 1) if speed is not None else None,
        # The training's own time, every job of a resumed run counted (a reused run: the original training's,
        # marked so), the same for every row: the benchmark's job time would count loading and saving for one row
        # and not for a resumed one. A summary from before train_seconds: the job's time.
        "train_wall_s": summary["train_seconds"] if "train_seconds" in summary else float(bench["s"]),
        "reused": bool(summary.get("reused")),
        "max_rss_mb": float(bench["max_rss"]) if bench.get("max_rss") not in (None, "", "-", "NA") else None,
    }
    if summary.get("peak_gpu_memory_gb") is not None:
        record["peak_gpu_memory_gb"] = summary["peak_gpu_memory_gb"]
    return record


def metrics_rows(models: dict[str, dict[str, Any]]) -> list[list[str]]:
    """The comparison table as rows of cells: a header, then one row per model."""
    return [["model", *COLUMNS], *([name, *(cell(row) for cell in COLUMNS.values())] for name, row in models.items())]


def compare(scores: dict[str, dict[str, Any]], metrics_path: str | Path, table_path: str | Path,
            html_path: str | Path | None = None) -> None:
    """metrics.json with every model's entry, a Markdown table a person reads first, and the same table as HTML
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


def compare_runs(base_scores: str | Path, runs: dict[str, dict[str, Any]], metrics_path: str | Path,
                 table_path: str | Path, html_path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The base and every run in one comparison. `runs`: name -> {"method", "scores", "log", "summary",
    "benchmark"} (file paths) and optionally "trained_by", the run whose training it shares (glmtune.experiments.
    shared_trainings); returns metrics.json's content: name -> scores (+ the run's training record)."""
    models: dict[str, dict[str, Any]] = {"base": json.loads(Path(base_scores).read_text(encoding="utf-8"))}
    for name, files in runs.items():
        models[name] = {"method": files["method"], **json.loads(Path(files["scores"]).read_text(encoding="utf-8")),
                        **training_record(files["log"], files["summary"], files["benchmark"])}
        if files.get("trained_by", name) != name:
            models[name]["trained_by"] = files["trained_by"]
    compare(models, metrics_path, table_path, html_path)
    return models
