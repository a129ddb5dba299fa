"""Snakemake entry: the merged (LoRA) or re-saved (full SFT) model, verified."""
from glmtune.export.merge import export_model
from glmtune.logs import job_logging
from glmtune.settings import ExportSettings, ModelSettings

with job_logging(snakemake.log[0]):
    inp, params = snakemake.input, snakemake.params
    export_model(inp.adapter, inp.base, snakemake.output[0], inp.test, ExportSettings.from_config(params.export),
                 ModelSettings.from_params(params.template, params),
                 extra_files={"eval_metrics.md": inp.metrics, "data_report.html": inp.data_report})
