"""Snakemake entry: generate or download one dataset."""
from glmtune.data_settings import FetchSettings
from glmtune.fetch import fetch_dataset
from glmtune.launch import die_with_parent
from glmtune.logs import job_logging

die_with_parent()  # a job outlives no Snakemake: a leftover would write its outputs after a newer run checked them

with job_logging(snakemake.log[0]):
    name = snakemake.wildcards.dataset
    fetch_dataset(name, FetchSettings.from_config(snakemake.params.spec, f"datasets.{name}"), snakemake.output[0])
