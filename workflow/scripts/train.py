"""Snakemake entry: LoRA fine-tuning, in this process, or with several GPUs through torchrun (glmtune.launch)."""
import json
import os
from pathlib import Path

from glmtune.launch import Layout, launch_command, run
from glmtune.logs import job_logging

# Caches under resources/ (on the shared file system with the downloads) unless set: DeepSpeed builds its ops once.
for variable, folder in (("HF_HOME", "huggingface"), ("MODELSCOPE_CACHE", "modelscope"), ("TORCH_EXTENSIONS_DIR", "torch_extensions")):
    os.environ.setdefault(variable, str(Path("resources/cache", folder).resolve()))

inp, out = snakemake.input, snakemake.output
arguments = {
    "train_dir": inp.train, "validation_dir": inp.validation,
    # The absolute base path goes into adapter_config.json so the adapter loads from any directory.
    "model_dir": str(Path(inp.model).resolve()),
    "adapter_dir": out.adapter, "log_path": out.log, "plot_path": out.plot,
    "checkpoint_root": snakemake.params.checkpoints, "settings": snakemake.params.settings,
    "trust_remote_code": snakemake.params.get("trust_remote_code", False),
    "run_name": snakemake.params.get("run_name"),
}
resources = snakemake.resources
layout = Layout.from_resources(resources.get("gpu", 0), resources.get("nodes", 1), resources.get("cpus_per_task"))
deepspeed = bool(snakemake.params.settings.get("deepspeed"))  # needs a launcher even for one process
if layout.processes == 1 and not deepspeed:
    from glmtune.train.trainer import train_model

    with job_logging(snakemake.log[0]):
        train_model(**arguments)
else:
    run(launch_command("train", [json.dumps(arguments, ensure_ascii=False)], layout, distributed=deepspeed), snakemake.log[0])
