"""Snakemake entry: the report's data page."""
from glmtune.data.report import write_data_report
from glmtune.logs import job_logging

with job_logging(snakemake.log[0]):
    inp = snakemake.input
    write_data_report(list(zip(inp.reports, inp.rejects)), inp.splits, inp.tokens, snakemake.output[0])
