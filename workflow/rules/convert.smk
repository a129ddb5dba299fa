# convert: one job per dataset file, into canonical conversations plus a rejects file and a report.


rule convert:
    input:
        raw=raw_input,
    output:
        conversations="results/converted/{dataset}/{part}.jsonl",
        rejects="results/converted/{dataset}/{part}.rejects.jsonl",
        report="results/converted/{dataset}/{part}.report.json",
    resources:
        **rule_resources("convert"),
    params:
        member=raw_member,
        format=lambda wildcards: DATASETS[wildcards.dataset]["format"],
        options=convert_options,
    log:
        "logs/convert/{dataset}/{part}.log",
    conda:
        ENV
    script:
        "../scripts/convert.py"
