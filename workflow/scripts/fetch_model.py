"""Snakemake entry: link a local model folder or download one from a hub."""
from glmtune.fetch import fetch_model_folder
from glmtune.logs import job_logging

with job_logging(snakemake.log[0]):
    fetch_model_folder(snakemake.wildcards.model, snakemake.params.spec, snakemake.output[0], snakemake.params.cache)
