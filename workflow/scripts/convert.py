"""Snakemake entry: convert one raw dataset file into canonical conversations."""
from pathlib import Path

from glmtune.data.convert import convert_file
from glmtune.logs import job_logging

with job_logging(snakemake.log[0]):
    raw = Path(snakemake.input.raw, snakemake.params.member)  # member is "" for local files
    out = snakemake.output
    convert_file(raw, out.conversations, out.rejects, out.report, snakemake.params.format,
                 snakemake.wildcards.dataset, snakemake.params.options)
