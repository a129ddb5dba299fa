# export: the LoRA merged into the base model, checked against the adapter's logits, at results/merged_model.


rule export_model:
    input:
        adapter=trained_for_export,
        base=base_model_dir(),
        test="results/splits/test.jsonl",
        metrics="results/eval/metrics.md",
        data_report="results/report/data.html",
    output:
        directory("results/merged_model"),
    params:
        template=MODEL["template"],
        export=config["export"],
        **remote_code_params(),
    log:
        "logs/export_model.log",
    conda:
        MODEL_ENV
    script:
        "../scripts/export_model.py"
