# fetch: datasets (generated demo data or a download) and model weights, cached under resources/; prepare_model
# makes the weights a native transformers folder (a compute job).

# On a cluster these run on the login node: compute nodes often have no internet.
localrules:
    fetch_dataset,
    fetch_model,


rule fetch_dataset:
    output:
        directory("resources/datasets/{dataset}"),
    params:
        spec=lambda wildcards: {k: DATASETS[wildcards.dataset].get(k) for k in ("source", "url", "sha256", "demo")},
    log:
        "logs/fetch_dataset/{dataset}.log",
    conda:
        ENV
    script:
        "../scripts/fetch_dataset.py"


rule fetch_model:
    output:
        # A record naming resources/cache/downloads/{model}, which is no output: a killed download resumes.
        "resources/downloads/{model}.json",
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
    log:
        "logs/build_tiny_model.log",
    conda:
        ENV
    script:
        "../scripts/build_tiny_model.py"
