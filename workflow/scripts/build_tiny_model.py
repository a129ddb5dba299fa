"""Snakemake entry: the tiny random model (of model.template's family) and a tokenizer trained on the training text."""
from glmtune.logs import job_logging
from glmtune.model.tiny import build_tiny_model
from glmtune.settings import TinySettings

with job_logging(snakemake.log[0]):
    build_tiny_model([snakemake.input.train], snakemake.output[0], TinySettings.from_config(snakemake.params.size),
                     family=snakemake.params.family)
