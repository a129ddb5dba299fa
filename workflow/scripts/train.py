"""Snakemake entry: LoRA fine-tuning."""
from pathlib import Path

from glmtune.logs import job_logging
from glmtune.training import train_lora

with job_logging(snakemake.log[0]):
    inp, out = snakemake.input, snakemake.output
    # The absolute base path goes into adapter_config.json so the adapter loads from any directory.
    train_lora(inp.train, inp.validation, Path(inp.model).resolve(), out.adapter, out.log, out.plot,
               snakemake.params.checkpoints, snakemake.params.settings)
