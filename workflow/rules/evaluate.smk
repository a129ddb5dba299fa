# evaluate: generation on the test split for the base and the fine-tuned model, then one comparison.


rule evaluate:
    input:
        model=eval_model_dir,
        base=base_model_dir(),
        test="results/splits/test.jsonl",
    output:
        predictions="results/eval/{variant}/predictions.jsonl",
        scores="results/eval/{variant}/scores.json",
    resources:
        # GPUs of one node: more than one starts one generating process per GPU (torchrun); each takes every N-th batch.
        gpu=0,
    params:
        settings=config["evaluate"],
        template=MODEL["template"],
        max_input_length=config["tokenize"]["max_input_length"],
        **remote_code_params(),
    log:
        "logs/evaluate/{variant}.log",
    benchmark:
        "benchmarks/evaluate/{variant}.tsv"
    conda:
        MODEL_ENV
    script:
        "../scripts/evaluate.py"


rule compare_models:
    input:
        base="results/eval/base/scores.json",
        finetuned="results/eval/finetuned/scores.json",
    output:
        metrics="results/eval/metrics.json",
        table="results/eval/metrics.md",
        html=report("results/eval/metrics.html", caption="../report/metrics.rst", category="Evaluation"),
    log:
        "logs/compare_models.log",
    conda:
        ENV
    script:
        "../scripts/compare_models.py"
