"""Snakemake entry: merge converted files into train / validation / test."""
from pathlib import Path

from glmtune.data.split import Part, merge_and_split
from glmtune.data_settings import SplitSettings
from glmtune.logs import job_logging

with job_logging(snakemake.log[0]):
    merge_and_split([Part.from_config(part) for part in snakemake.params.parts], Path(snakemake.output.train).parent,
                    SplitSettings.from_config(snakemake.params.split),
                    write_test="test" in snakemake.output.keys())  # else split_test writes it
