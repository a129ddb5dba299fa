# tokenize: the chat template with loss masks, cached as Arrow datasets, plus length statistics.


rule tokenize:
    input:
        train="results/splits/train.jsonl",
        validation="results/splits/validation.jsonl",
        model=base_model_dir(),
    output:
        train=directory("results/tokenized/train"),
        validation=directory("results/tokenized/validation"),
        stats="results/tokenized/stats.json",
    params:
        template=MODEL["template"],
        lengths=config["tokenize"],
        **remote_code_params(),
    log:
        "logs/tokenize.log",
    conda:
        MODEL_ENV
    script:
        "../scripts/tokenize.py"
