# qdesign: quantized neural network design under a weight-memory budget.
# Every width x bits x seed cell of every study in the config is its own target.
# Rules: workflow/rules/*.smk; logic: src/qdesign/; config keys: config/README.md.
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


# the repository's default config, wherever the working directory (--directory) is
configfile: Path(workflow.basedir) / "config" / "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/retrain.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        all_targets(),
