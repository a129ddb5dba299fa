"""Snakemake entry: the merged (LoRA) or re-saved (full SFT) model, verified."""
from glmtune.export.merge import export_model
from glmtune.logs import job_logging

with job_logging(snakemake.log[0]):
    inp, export = snakemake.input, snakemake.params.export
    export_model(inp.adapter, inp.base, snakemake.output[0], inp.test, snakemake.params.template,
                 export["tolerance"], extra_files={"eval_metrics.md": inp.metrics, "data_report.html": inp.data_report},
                 dtype=export["dtype"], max_shard_size_gb=export["export_size"],
                 trust_remote_code=snakemake.params.get("trust_remote_code", False))
