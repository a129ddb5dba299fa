# export: a run's LoRA merged into the base model (or its full SFT model re-saved), checked against the adapter's
# logits. results/merged_model is the export of export.run (default: the first run); all_runs_exported exports each.


rule export_model:
    input:
        adapter=lambda wildcards: trained_for_export(wildcards.run),
        base=base_model_dir(),
        generation_config=export_inputs(),
        test="results/splits/test.jsonl",
        metrics="results/eval/metrics.md",
        data_report="results/report/data.html",
    output:
        directory("results/runs/{run}/merged_model"),
    resources:
        **rule_resources("export_model"),
    params:
        template=MODEL["template"],
        export=EXPORT_SETTINGS,
        **remote_code_params(),
    log:
        "logs/runs/{run}/export_model.log",
    conda:
        MODEL_ENV
    script:
        "../scripts/export_model.py"


use rule export_model as export_chosen with:
    input:
        adapter=lambda wildcards: trained_for_export(EXPORT_RUN),
        base=base_model_dir(),
        generation_config=export_inputs(),
        test="results/splits/test.jsonl",
        metrics="results/eval/metrics.md",
        data_report="results/report/data.html",
    output:
        directory("results/merged_model"),
    log:
        f"logs/runs/{EXPORT_RUN}/export_chosen.log",  # beside that run's other logs
    resources:
        **rule_resources("export_model", "export_chosen"),


# Every run's merged model (P-Tuning v2 runs have none: their adapters are used as they are).
rule all_runs_exported:
    input:
        [f"results/runs/{run}/merged_model" for run in EXPORTED_RUNS],
