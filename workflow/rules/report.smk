# report: the data page (per dataset in/out/rejected and why, cleaning steps, split sizes, token lengths) for
# `snakemake --report`; the merged model carries it too.


rule report_data:
    input:
        reports=[part["path"].removesuffix(".jsonl") + ".report.json" for part in converted_parts()],
        rejects=[part["path"].removesuffix(".jsonl") + ".rejects.jsonl" for part in converted_parts()],
        splits="results/splits/report.json",
        # every set the runs train on (the export run's first): runs with tokenize settings of their own have theirs
        tokens=[f"results/tokenized/{name}/stats.json"
                for name in dict.fromkeys([TOKENIZED[EXPORT_RUN], *(TOKENIZED[run] for run in TRAINING_RUNS)])],
    output:
        report("results/report/data.html", caption="../report/data.rst", category="Data"),
    log:
        "logs/report_data.log",
    conda:
        ENV
    script:
        "../scripts/report_data.py"
