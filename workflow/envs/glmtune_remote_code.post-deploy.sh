#!/usr/bin/env bash
# Run by Snakemake once, inside the new glmtune_remote_code environment, from the workflow's working directory
# (the checkout, as for glmtune.yaml's `-e ../..`). glmtune goes in without its dependencies: its pyproject asks
# for transformers 5, while this environment pins 4.40.2 on purpose.
set -euo pipefail
if [ ! -f pyproject.toml ] || [ ! -d src/glmtune ]; then
    echo "glmtune_remote_code.post-deploy.sh: run snakemake from the glmtune checkout (no pyproject.toml / src/glmtune in $PWD)" >&2
    exit 1
fi
python -m pip install --no-deps -e .
