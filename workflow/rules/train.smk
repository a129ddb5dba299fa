# train: LoRA fine-tuning. Checkpoints live in results/checkpoints/ (not an output) so a killed run resumes.


rule train:
    input:
        train="results/tokenized/train",
        validation="results/tokenized/validation",
        model=base_model_dir(),
    output:
        adapter=directory(TRAINED),
        log="results/train/log.jsonl",
        plot=report("results/train/loss.png", caption="../report/loss.rst", category="Training"),
    resources:
        # GPUs in total and nodes: 0 or 1 GPU trains in the job's own process; more start one process per GPU
        # (torchrun; on several nodes one torchrun per node under srun). See src/glmtune/launch.py, profiles/slurm.
        gpu=0,
        nodes=1,
    params:
        settings=config["train"],
        checkpoints="results/checkpoints",
        **remote_code_params(),
    log:
        "logs/train.log",
    benchmark:
        "benchmarks/train.tsv"
    conda:
        MODEL_ENV
    script:
        "../scripts/train.py"
