# Pages for the Snakemake report beside the figures: each study's answer (its
# first page: the best design per budget and the law), its tables, and the
# provenance of the run. `snakemake --cores all report_pages` then
# `snakemake --report report.html` (README, "Report").


localrules:
    report_answer,
    report_tables,
    report_provenance,
    report_pages,
    reference_answer,
    reference_tables,
    reference_provenance,


rule report_answer:
    input:
        summary=layout.table_file("{study}", "summary"),
        frontier=layout.table_file("{study}", "frontier"),
        scaling=layout.table_file("{study}", "scaling"),
    output:
        report(
            layout.report_page("{study}", "answer"),
            caption="../report/answer.rst",
            category="{study}",
            subcategory="answer",
            labels={"page": "best design per budget, the law"},
        ),
    log:
        layout.log_file("report_answer", "{study}"),
    conda:
        "../../envs/qdesign.yaml"
    shell:
        "python -m qdesign report-answer --summary {input.summary} --frontier {input.frontier} "
        "--scaling {input.scaling} --out {output} > {log} 2>&1"


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
        [layout.table_file(study, "summary") for study in GRID_STUDIES],
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
        [layout.report_page(study, "answer") for study in GRID_STUDIES],
        [layout.report_page(study, "tables") for study in GRID_STUDIES],
        [
            layout.report_page(study, "mixed")
            for study in GRID_STUDIES
            if qspecs.has_mixed(config, study)
        ],
        [layout.report_page(study, "search") for study in STUDIES if has_search(study)],
        [layout.PROVENANCE_PAGE] if GRID_STUDIES else [],


# The same pages for the shipped reference results (`snakemake reference`):
# each reference study's answer and tables, and the recorded provenance of the
# run that made them (reference/<profile>/provenance.json, its config as shipped).
use rule report_answer as reference_answer with:
    input:
        summary=layout.reference_table("summary"),
        frontier=layout.reference_table("frontier"),
        scaling=layout.reference_table("scaling"),
    output:
        report(
            layout.reference_report_page("{profile}", "{ref_study}", "answer"),
            caption="../report/answer.rst",
            category=layout.REFERENCE_CATEGORY,
            subcategory="answer",
            labels={"page": "best design per budget, the law"},
        ),
    log:
        layout.log_file("reference_answer", "{profile}/{ref_study}"),


use rule report_tables as reference_tables with:
    input:
        summary=layout.reference_table("summary"),
        ecr=layout.reference_table("ecr"),
        frontier=layout.reference_table("frontier"),
    output:
        report(
            layout.reference_report_page("{profile}", "{ref_study}", "tables"),
            caption="../report/tables.rst",
            category=layout.REFERENCE_CATEGORY,
            subcategory="tables",
            labels={"table": "summary, ECR, frontier"},
        ),
    log:
        layout.log_file("reference_tables", "{profile}/{ref_study}"),


rule reference_provenance:
    input:
        config=layout.REFERENCE_CONFIG,
        record=layout.REFERENCE_PROVENANCE,
        summaries=lambda wc: reference_summaries(wc.profile),
    output:
        report(
            layout.REFERENCE_PROVENANCE_PAGE,
            caption="../report/reference_provenance.rst",
            category="provenance",
            labels={"page": "reference {profile}"},
        ),
    log:
        layout.log_file("reference_provenance", "{profile}"),
    conda:
        "../../envs/qdesign.yaml"
    shell:
        "python -m qdesign report-provenance --config-file {input.config} --recorded {input.record} "
        "--summaries {input.summaries} --out {output} > {log} 2>&1"
