# evaluate: generation on the test split for the base model (once) and each run, then one comparison of them all.


rule evaluate:
    input:
        model=lambda wildcards: trained_dir(wildcards.run),
        base=base_model_dir(),
        test="results/splits/test.jsonl",
        # What the training used, and its settings below: when its output is missing (a killed training), Snakemake
        # re-runs it only for a job that is outdated itself, so every job downstream of training is outdated with it.
        trained_on=trained_on,
    output:
        predictions="results/runs/{run}/eval/predictions.jsonl",
        scores="results/runs/{run}/eval/scores.json",
    resources:
        # GPUs of one node: more than one starts one generating process per GPU (torchrun); each takes every N-th batch.
        **rule_resources("evaluate", gpu=0),
    params:
        settings=run_setting("evaluate"),
        template=MODEL["template"],
        tokenize=lambda wildcards: evaluation_reads(RUNS[wildcards.run]["tokenize"]),  # the prompts' limit, the share cut
        trained_with=trained_with,
        **remote_code_params(),
    log:
        "logs/runs/{run}/evaluate.log",
    benchmark:
        "benchmarks/runs/{run}/evaluate.tsv"
    conda:
        MODEL_ENV
    script:
        "../scripts/evaluate.py"


# The base model with the config's own evaluate and tokenize settings: its inputs name no run, so it runs once.
use rule evaluate as evaluate_base with:
    input:
        model=base_model_dir(),
        base=base_model_dir(),
        test="results/splits/test.jsonl",
    output:
        predictions="results/eval/base/predictions.jsonl",
        scores="results/eval/base/scores.json",
    params:
        settings=config["evaluate"],
        template=MODEL["template"],
        tokenize=evaluation_reads(config["tokenize"]),  # as a run's: the settings it reads
        **remote_code_params(),
    log:
        "logs/evaluate/base.log",
    resources:
        **rule_resources("evaluate", "evaluate_base", gpu=0),
    benchmark:
        "benchmarks/evaluate/base.tsv"


rule compare_models:
    input:
        base="results/eval/base/scores.json",
        **comparison_inputs(),
    output:
        metrics="results/eval/metrics.json",
        table="results/eval/metrics.md",
        html=report("results/eval/metrics.html", caption="../report/metrics.rst", category="Evaluation"),
        curves=report("results/eval/loss_curves.png", caption="../report/loss_curves.rst", category="Evaluation"),
    params:
        runs=list(RUNS),
        methods={run: method_label(settings["train"]) for run, settings in RUNS.items()},
        trained_by=TRAINER,  # a run sharing another's training is marked so in the table
    log:
        "logs/compare_models.log",
    conda:
        ENV
    script:
        "../scripts/compare_models.py"
