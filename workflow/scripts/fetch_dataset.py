"""Snakemake entry: generate or download one dataset."""
from glmtune.data_settings import FetchSettings
from glmtune.fetch import fetch_dataset
from glmtune.logs import job_logging

with job_logging(snakemake.log[0]):
    name = snakemake.wildcards.dataset
    fetch_dataset(name, FetchSettings.from_config(snakemake.params.spec, f"datasets.{name}"), snakemake.output[0])
