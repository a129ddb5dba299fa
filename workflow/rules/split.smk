# merge: every converted file into train / validation / test.


rule merge_splits:
    input:
        [part[2] for part in converted_parts()],
    output:
        train="results/splits/train.jsonl",
        validation="results/splits/validation.jsonl",
        test="results/splits/test.jsonl",
        report="results/splits/report.json",
    params:
        parts=converted_parts(),
        split=config["split"],
    log:
        "logs/merge_splits.log",
    conda:
        ENV
    script:
        "../scripts/merge_splits.py"
