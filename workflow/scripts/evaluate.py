"""Snakemake entry: generate on the test split and score one model, in this process or one process per GPU."""
import json

from glmtune.launch import Layout, launch_command, run
from glmtune.logs import job_logging

inp, out, settings = snakemake.input, snakemake.output, snakemake.params.settings
arguments = {
    "model_dir": inp.model, "test_path": inp.test, "predictions_path": out.predictions, "scores_path": out.scores,
    "template_name": snakemake.params.template, "max_samples": settings["max_samples"],
    "batch_size": settings["batch_size"], "max_new_tokens": settings["max_new_tokens"],
    "max_input_length": snakemake.params.max_input_length, "base_model": inp.base, "cache": settings["cache"],
    "trust_remote_code": snakemake.params.get("trust_remote_code", False),
}
layout = Layout.from_resources(snakemake.resources.get("gpu", 0), 1)  # all GPUs of one node
if layout.processes == 1:
    from glmtune.evaluate.predict import evaluate_model

    with job_logging(snakemake.log[0]):
        evaluate_model(**arguments)
else:
    run(launch_command("evaluate", [json.dumps(arguments, ensure_ascii=False)], layout), snakemake.log[0])
