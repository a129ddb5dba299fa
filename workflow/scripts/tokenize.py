"""Snakemake entry: tokenize the train and validation splits with the chat template."""
from glmtune.tokenize.splits import tokenize_splits
from glmtune.logs import job_logging
from glmtune.settings import ModelSettings, TokenizeSettings

with job_logging(snakemake.log[0]):
    inp, out, params = snakemake.input, snakemake.output, snakemake.params
    tokenize_splits({"train": inp.train, "validation": inp.validation}, {"train": out.train, "validation": out.validation},
                    out.stats, inp.model, TokenizeSettings.from_config(params.lengths),
                    ModelSettings.from_params(params.template, params))
