# fetch: datasets (generated demo data, or a download cached under resources/).

# On a cluster these run on the login node: compute nodes often have no internet.
localrules:
    fetch_dataset,


rule fetch_dataset:
    output:
        directory("resources/datasets/{dataset}"),
    resources:
        **rule_resources("fetch_dataset"),
    params:
        spec=lambda wildcards: {k: DATASETS[wildcards.dataset].get(k) for k in ("source", "url", "sha256", "demo")},
    log:
        "logs/fetch_dataset/{dataset}.log",
    conda:
        ENV
    script:
        "../scripts/fetch_dataset.py"
