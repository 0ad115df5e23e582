#!/usr/bin/env bash
# Run by Snakemake (--sdm conda) once, inside the freshly created rule environment (pipeline.yaml), from the
# workflow's working directory, the project root: installs this project's package (bayes_transfer), which every
# workflow script imports. Editable, so the environment always runs the checked-out code; no dependencies
# (pipeline.yaml has installed them).
set -euo pipefail
if ! grep -qs '^name = "bayes_transfer"' pyproject.toml; then
    echo "pipeline.post-deploy.sh: no bayes_transfer pyproject.toml in $(pwd); run snakemake from the project root" >&2
    exit 1
fi
python -m pip install --no-deps -e .
