"""Snakemake entry: generate on the test split and score one model, in this process or one process per GPU."""
from glmtune.launch import Layout, run_stage
from glmtune.lifetime import die_with_parent
from glmtune.settings import EvaluateSettings, ModelSettings, TokenizeSettings

die_with_parent()  # a job outlives no Snakemake: a leftover would write its outputs after a newer run checked them

inp, out, params = snakemake.input, snakemake.output, snakemake.params
arguments = {
    "model_dir": inp.model, "test_path": inp.test, "predictions_path": out.predictions, "scores_path": out.scores,
    "settings": EvaluateSettings.from_config(params.settings), "model": ModelSettings.from_params(params.template, params),
    "tokenize": TokenizeSettings.from_config(params.tokenize), "base_model": inp.base,
}
run_stage("evaluate", arguments, Layout.from_resources(snakemake.resources.get("gpu", 0), 1), snakemake.log[0])  # GPUs of one node
