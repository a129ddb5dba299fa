"""Snakemake entry: generate on the test split and score one model."""
from glmtune.evaluation import evaluate_model
from glmtune.logs import job_logging

with job_logging(snakemake.log[0]):
    inp, out, settings = snakemake.input, snakemake.output, snakemake.params.settings
    evaluate_model(inp.model, inp.test, out.predictions, out.scores, snakemake.params.template,
                   settings["max_samples"], settings["batch_size"], settings["max_new_tokens"],
                   snakemake.params.max_input_length, base_model=inp.base, cache=settings["cache"])
