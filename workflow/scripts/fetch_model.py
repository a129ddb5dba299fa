"""Snakemake entry: download a model from a hub (runs on the login node: a localrule)."""
from glmtune.fetch import download_model
from glmtune.logs import job_logging

with job_logging(snakemake.log[0]):
    download_model(snakemake.wildcards.model, snakemake.params.spec, snakemake.params.cache, snakemake.output[0])
