"""Snakemake entry: generate or download one dataset."""
from glmtune.fetch import fetch_dataset
from glmtune.logs import job_logging

with job_logging(snakemake.log[0]):
    fetch_dataset(snakemake.wildcards.dataset, snakemake.params.spec, snakemake.output[0])
