"""Snakemake entry: metrics.json and the comparison table (Markdown, and HTML for the report)."""
import json

from glmtune.evaluate.compare import compare
from glmtune.logs import job_logging

with job_logging(snakemake.log[0]):
    scores = {name: json.loads(open(path, encoding="utf-8").read()) for name, path in snakemake.input.items()}
    compare(scores, snakemake.output.metrics, snakemake.output.table, snakemake.output.html)
