"""Snakemake entry: the tiny random model (of model.template's family) and a tokenizer trained on the training text."""
from glmtune.launch import die_with_parent
from glmtune.logs import job_logging
from glmtune.model.tiny import build_tiny_model
from glmtune.settings import TinySettings

die_with_parent()  # a job outlives no Snakemake: a leftover would write its outputs after a newer run checked them

with job_logging(snakemake.log[0]):
    build_tiny_model([snakemake.input.train], snakemake.output[0], TinySettings.from_config(snakemake.params.size),
                     family=snakemake.params.family)
