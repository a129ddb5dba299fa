# merge: every converted file into train / validation / test.


rule merge_splits:
    input:
        [part["path"] for part in converted_parts()],
    output:
        **merge_outputs(),
    params:
        parts=converted_parts(),
        split=config["split"],
    log:
        "logs/merge_splits.log",
    conda:
        ENV
    script:
        "../scripts/merge_splits.py"


# The test split from the files given for it alone (see test_from_given_files): the base model's evaluation depends
# on these. Defined only then, so results/splits/test.jsonl has one rule in every layout.
if test_from_given_files():

    rule split_test:
        input:
            [part["path"] for part in test_parts()],
        output:
            test="results/splits/test.jsonl",
        params:
            parts=test_parts(),
            seed=config["split"]["seed"],
        log:
            "logs/split_test.log",
        conda:
            ENV
        script:
            "../scripts/split_test.py"
