# qdesign: quantized neural network design under a weight-memory budget.
# Every width x bits x seed cell of every study in the config is its own target.
# Rules: workflow/rules/*.smk; logic: src/qdesign/; config keys: config/README.md.
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


# The catalog convention: config/config.yaml of the working directory, so that
# `snakemake --directory .test` runs the tiny test study; from a working
# directory without one (any other --directory), the repository's default.
# A --configfile replaces it (see workflow/rules/common.smk).
_DEFAULT_CONFIG = Path("config/config.yaml")
if not _DEFAULT_CONFIG.is_file():
    _DEFAULT_CONFIG = Path(workflow.basedir) / "config" / "config.yaml"


configfile: _DEFAULT_CONFIG


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/retrain.smk"
include: "workflow/rules/mixed.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/recommend.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
