# report: the data page (per dataset in/out/rejected and why, cleaning steps, split sizes, token lengths) for
# `snakemake --report`; the merged model carries it too.


rule report_data:
    input:
        reports=[f"results/converted/{name}/{part}.report.json" for name, part, *_ in converted_parts()],
        rejects=[f"results/converted/{name}/{part}.rejects.jsonl" for name, part, *_ in converted_parts()],
        splits="results/splits/report.json",
        tokens=f"results/tokenized/{TOKENIZED[EXPORT_RUN]}/stats.json",
    output:
        report("results/report/data.html", caption="../report/data.rst", category="Data"),
    log:
        "logs/report_data.log",
    conda:
        ENV
    script:
        "../scripts/report_data.py"
