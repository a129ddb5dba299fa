"""Snakemake entry: the report's data page."""
from glmtune.data.report import write_data_report
from glmtune.launch import die_with_parent
from glmtune.logs import job_logging

die_with_parent()  # a job outlives no Snakemake: a leftover would write its outputs after a newer run checked them

with job_logging(snakemake.log[0]):
    inp = snakemake.input
    write_data_report(list(zip(inp.reports, inp.rejects)), inp.splits, inp.tokens, snakemake.output[0])
