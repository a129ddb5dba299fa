"""Snakemake entry: merge converted files into train / validation / test."""
from pathlib import Path

from glmtune.logs import job_logging
from glmtune.data.split import Part, merge_and_split

with job_logging(snakemake.log[0]):
    split = snakemake.params.split
    merge_and_split([Part(*part) for part in snakemake.params.parts], Path(snakemake.output.train).parent,
                    split["validation_ratio"], split["test_ratio"], split["seed"], split["dedupe_across_datasets"],
                    write_test="test" in snakemake.output.keys())  # else split_test writes it
