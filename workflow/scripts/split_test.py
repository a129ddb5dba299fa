"""Snakemake entry: the test split from the files given for it alone."""
from glmtune.data.split import Part, write_given_test
from glmtune.logs import job_logging

with job_logging(snakemake.log[0]):
    write_given_test([Part.from_config(part) for part in snakemake.params.parts], snakemake.output.test,
                     snakemake.params.seed)
