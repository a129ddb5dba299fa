"""Snakemake entry: tokenize the train and validation splits with the chat template."""
from glmtune.logs import job_logging
from glmtune.data.tokenize_splits import tokenize_splits

with job_logging(snakemake.log[0]):
    inp, out = snakemake.input, snakemake.output
    tokenize_splits({"train": inp.train, "validation": inp.validation}, {"train": out.train, "validation": out.validation},
                    out.stats, inp.model, snakemake.params.template, **snakemake.params.lengths,
                    trust_remote_code=snakemake.params.get("trust_remote_code", False))
