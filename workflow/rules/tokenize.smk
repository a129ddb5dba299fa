# tokenize: the chat template with loss masks, cached as Arrow datasets, plus length statistics; one set per distinct
# tokenize settings among the runs (results/tokenized/default: the config's own).


rule tokenize:
    input:
        train="results/splits/train.jsonl",
        validation="results/splits/validation.jsonl",
        model=base_model_dir(),
    output:
        train=directory("results/tokenized/{tokenized}/train"),
        validation=directory("results/tokenized/{tokenized}/validation"),
        stats="results/tokenized/{tokenized}/stats.json",
    resources:
        **rule_resources("tokenize"),
    params:
        template=MODEL["template"],
        lengths=lambda wildcards: TOKENIZE_SETTINGS[wildcards.tokenized],
        **remote_code_params(),
    log:
        "logs/tokenize/{tokenized}.log",
    conda:
        MODEL_ENV
    script:
        "../scripts/tokenize.py"
