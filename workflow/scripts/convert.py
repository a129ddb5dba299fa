"""Snakemake entry: convert one raw dataset file into canonical conversations."""
from pathlib import Path

from glmtune.data.convert import convert_file
from glmtune.data_settings import ConvertSettings, given_files
from glmtune.fetch import fetched_members
from glmtune.logs import job_logging

with job_logging(snakemake.log[0]):
    member, wildcards = snakemake.params.member, snakemake.wildcards  # member is "" for local files
    raw = (fetched_members(snakemake.input.raw, member, wildcards.dataset, wildcards.part) if member
           else [Path(path) for path in given_files(snakemake.input.raw)])
    out = snakemake.output
    settings = ConvertSettings.from_config(snakemake.params.options, f"datasets.{wildcards.dataset}")
    convert_file(raw, out.conversations, out.rejects, out.report, snakemake.params.format, wildcards.dataset, settings)
