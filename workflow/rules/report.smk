# Pages for the Snakemake report beside the figures: each study's tables, and
# the provenance of the run. `snakemake --cores all report_pages` then
# `snakemake --report report.html` (README, "Report").


localrules:
    report_tables,
    report_provenance,
    report_pages,


rule report_tables:
    input:
        summary=layout.table_file("{study}", "summary"),
        ecr=layout.table_file("{study}", "ecr"),
        frontier=layout.table_file("{study}", "frontier"),
    output:
        report(
            layout.report_page("{study}", "tables"),
            caption="../report/tables.rst",
            category="{study}",
            subcategory="tables",
            labels={"table": "summary, ECR, frontier"},
        ),
    log:
        layout.log_file("report_tables", "{study}"),
    conda:
        "../../envs/qdesign.yaml"
    shell:
        "python -m qdesign report-tables --summary {input.summary} --ecr {input.ecr} "
        "--frontier {input.frontier} --out {output} > {log} 2>&1"


rule report_provenance:
    input:
        [layout.table_file(study, "summary") for study in STUDIES],
    output:
        report(
            layout.PROVENANCE_PAGE,
            caption="../report/provenance.rst",
            category="provenance",
            labels={"page": "config and versions"},
        ),
    log:
        layout.log_file("report_provenance"),
    conda:
        "../../envs/qdesign.yaml"
    params:
        config=lambda wc: qspecs.spec_json(config),
    shell:
        "python -m qdesign report-provenance --config-json {params.config:q} "
        "--summaries {input} --out {output} > {log} 2>&1"


rule report_pages:
    input:
        [layout.report_page(study, "tables") for study in STUDIES],
        [layout.report_page(study, "mixed") for study in STUDIES if qspecs.has_mixed(config, study)],
        layout.PROVENANCE_PAGE,
