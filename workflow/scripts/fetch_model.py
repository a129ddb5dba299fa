"""Snakemake entry: download a model from a hub (runs on the login node: a localrule)."""
from glmtune.fetch import download_model
from glmtune.launch import die_with_parent
from glmtune.logs import job_logging

die_with_parent()  # a job outlives no Snakemake: a leftover would write its outputs after a newer run checked them

with job_logging(snakemake.log[0]):
    download_model(snakemake.wildcards.model, snakemake.params.spec, snakemake.params.cache, snakemake.output[0])
