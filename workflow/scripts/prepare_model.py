"""Snakemake entry: the model as a native transformers folder (linked, converted, or kept for remote code)."""
from pathlib import Path

from glmtune.fetch import downloaded_folder
from glmtune.model.prepare import prepare_model_folder
from glmtune.logs import job_logging

with job_logging(snakemake.log[0]):
    spec = snakemake.params.spec
    source = Path(spec["path"]) if spec["source"] == "path" else downloaded_folder(Path(snakemake.input[0]))
    prepare_model_folder(snakemake.wildcards.model, spec, source, snakemake.output[0])
