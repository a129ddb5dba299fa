# model: the base model folder. fetch_model downloads hub weights (cached under resources/), prepare_model makes them
# a native transformers folder (a compute job); the embedded default instead builds a tiny model from the training text.

# On a cluster this runs on the login node: compute nodes often have no internet.
localrules:
    fetch_model,


rule fetch_model:
    output:
        # A record naming resources/cache/downloads/{model}, which is no output: a killed download resumes.
        "resources/downloads/{model}.json",
    resources:
        **rule_resources("fetch_model"),
    params:
        spec=download_spec(),
        cache="resources/cache",
    log:
        "logs/fetch_model/{model}.log",
    conda:
        ENV
    script:
        "../scripts/fetch_model.py"


rule prepare_model:
    input:
        model_files,
    output:
        directory("resources/models/{model}"),
    resources:
        **rule_resources("prepare_model"),
    params:
        spec=fetch_model_spec(),
    log:
        "logs/prepare_model/{model}.log",
    conda:
        ENV
    script:
        "../scripts/prepare_model.py"


rule build_tiny_model:
    input:
        train="results/splits/train.jsonl",
    output:
        directory("results/tiny_model"),
    params:
        size=MODEL["tiny"],
        family=MODEL["template"],  # the tokenizer carries that family's special tokens and chat template
    log:
        "logs/build_tiny_model.log",
    conda:
        ENV
    script:
        "../scripts/build_tiny_model.py"
