# train: one job per run, into results/runs/{run}/. Checkpoints live in results/runs/{run}/checkpoints/ (not an
# output) so a killed run resumes.


rule train:
    input:
        train=tokenized_input("train"),
        validation=tokenized_input("validation"),
        model=base_model_dir(),
    output:
        adapter=directory("results/runs/{run}/adapter"),
        log="results/runs/{run}/log.jsonl",
        plot=report("results/runs/{run}/loss.png", caption="../report/loss.rst", category="Training", subcategory="{run}"),
    wildcard_constraints:
        run=one_of([run for run in TRAINING_RUNS if run not in FULL_RUNS]),
    resources:
        # GPUs in total and nodes: 0 or 1 GPU trains in the job's own process; more start one process per GPU
        # (torchrun; on several nodes one torchrun per node under srun). See src/glmtune/launch.py, profiles/slurm.
        # Config resources.train (e.g. profiles/slurm/resources.yaml) goes over these, --set-resources over both.
        **rule_resources("train", gpu=0, nodes=1),
    params:
        settings=run_setting("train"),
        checkpoints="results/runs/{run}/checkpoints",
        run_name="{run}",
        template=MODEL["template"],
        **remote_code_params(),
    log:
        "logs/runs/{run}/train.log",
    benchmark:
        "benchmarks/runs/{run}/train.tsv"
    conda:
        MODEL_ENV
    script:
        "../scripts/train.py"


# Full SFT writes a whole model, not an adapter.
use rule train as train_full with:
    output:
        adapter=directory("results/runs/{run}/model"),
        log="results/runs/{run}/log.jsonl",
        plot=report("results/runs/{run}/loss.png", caption="../report/loss.rst", category="Training", subcategory="{run}"),
    wildcard_constraints:
        run=one_of([run for run in TRAINING_RUNS if run in FULL_RUNS]),
    resources:
        **rule_resources("train", "train_full", gpu=0, nodes=1),

