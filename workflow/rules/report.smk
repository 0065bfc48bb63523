# Pages for the Snakemake report beside the figures: each study's tables, and
# the provenance of the run. `snakemake --cores all report_pages` then
# `snakemake --report report.html` (README, "Report").


localrules:
    report_tables,
    report_provenance,
    report_pages,


rule report_tables:
    input:
        summary=layout.TABLE.replace("{table}", "summary"),
        ecr=layout.TABLE.replace("{table}", "ecr"),
        frontier=layout.TABLE.replace("{table}", "frontier"),
    output:
        report(
            "results/{study}/report/tables.html",
            caption="../report/tables.rst",
            category="{study}",
            subcategory="tables",
            labels={"table": "summary, ECR, frontier"},
        ),
    log:
        "results/logs/report_tables/{study}.log",
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
            "results/report/provenance.html",
            caption="../report/provenance.rst",
            category="provenance",
            labels={"page": "config and versions"},
        ),
    log:
        "results/logs/report_provenance.log",
    conda:
        "../../envs/qdesign.yaml"
    params:
        config=lambda wc: qspecs.spec_json(config),
    shell:
        "python -m qdesign report-provenance --config-json {params.config:q} "
        "--summaries {input} --out {output} > {log} 2>&1"


rule report_pages:
    input:
        [f"results/{study}/report/tables.html" for study in STUDIES],
        [
            f"results/{study}/report/mixed.html"
            for study in STUDIES
            if qspecs.has_mixed(config, study)
        ],
        "results/report/provenance.html",
