# Group DETR ablations as data (the workflow's files live in workflows/, see workflows/README.md).
#   studies:  workflows/config/studies.yaml     settings: workflows/config/config.yaml
#   rules:    workflows/rules/*.smk              schema:   workflows/schemas/config.schema.yaml
# Targets: {out}/<study> for every study, e.g. `snakemake --cores all results/ablation_K`;
# no target = every study plus the notebooks executed against the gathered results.
import os

from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "workflows", "config", "config.yaml")


include: "workflows/rules/common.smk"


rule all:
    input:
        all_targets(),


include: "workflows/rules/data.smk"
include: "workflows/rules/train.smk"
include: "workflows/rules/report.smk"
