"""Snakemake entry: fine-tuning, in this process, or with several GPUs through torchrun (glmtune.launch)."""
import os
from pathlib import Path

from glmtune.fetch import linked_model_source
from glmtune.launch import Layout, run_stage
from glmtune.lifetime import die_with_parent
from glmtune.settings import TrainSettings, remote_code_param

die_with_parent()  # a job outlives no Snakemake: a leftover would write its outputs after a newer run checked them

# Caches under resources/ (on the shared file system with the downloads) unless set: DeepSpeed builds its ops once.
for variable, folder in (("HF_HOME", "huggingface"), ("MODELSCOPE_CACHE", "modelscope"), ("TORCH_EXTENSIONS_DIR", "torch_extensions")):
    os.environ.setdefault(variable, str(Path("resources/cache", folder).resolve()))

inp, out, params = snakemake.input, snakemake.output, snakemake.params
settings = TrainSettings.from_config(params.settings)
arguments = {
    "train_dir": inp.train, "validation_dir": inp.validation,
    # The absolute base path goes into adapter_config.json so the adapter loads from any directory: a linked folder's
    # source (the user's own folder, or the download), which outlives this checkout's resources/.
    "model_dir": str(linked_model_source(inp.model) or Path(inp.model).resolve()),
    # The tokenizer saved with the adapter (or the full model) is the prepared folder's: its chat template is the
    # family's where the user's folder lays conversations out otherwise (glmtune.model.folder_template).
    "tokenizer_dir": str(Path(inp.model).resolve()),
    "adapter_dir": out.adapter, "log_path": out.log, "plot_path": out.plot,
    "checkpoint_root": params.checkpoints, "settings": settings, "trust_remote_code": remote_code_param(params),
    "run_name": params.get("run_name"), "family": params.template,
}
resources = snakemake.resources
layout = Layout.from_resources(resources.get("gpu", 0), resources.get("nodes", 1), resources.get("cpus_per_task"))
# DeepSpeed needs a launcher even for one process.
run_stage("train", arguments, layout, snakemake.log[0], distributed=bool(settings.deepspeed))
