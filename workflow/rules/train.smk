# train: LoRA fine-tuning. Checkpoints live in results/checkpoints/ (not an output) so a killed run resumes.


rule train:
    input:
        train="results/tokenized/train",
        validation="results/tokenized/validation",
        model=base_model_dir(),
    output:
        adapter=directory("results/train/adapter"),
        log="results/train/log.jsonl",
        plot=report("results/train/loss.png", caption="../report/loss.rst", category="Training"),
    params:
        settings=config["train"],
        checkpoints="results/checkpoints",
    log:
        "logs/train.log",
    benchmark:
        "benchmarks/train.tsv"
    conda:
        ENV
    script:
        "../scripts/train.py"
