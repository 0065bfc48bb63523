# Adaptive design search (studies with a search section; docs/search.md).
# Each round is a checkpoint: it fits the design law on the validation errors of
# the cells measured so far and writes the cells to train next
# (results/<study>/search/round-<r>.json). Those are ordinary cells of the study
# (train_float / retrain), so a search that stops halfway resumes where it was,
# and a later full study reuses every cell. Round r+1 is asked for only once
# round r is written; search.parquet gathers the rounds up to the one that stopped.


localrules:
    search_round,
    search_table,
    search_figures,
    report_search,
    reference_search_figures,
    reference_search_page,


checkpoint search_round:
    input:
        history=search_history,
        cells=search_cell_metrics,
    output:
        layout.search_round_file("{study}", "{round}"),
    log:
        layout.log_file("search_round", "{study}/{round}"),
    wildcard_constraints:
        round=r"\d+",
    conda:
        "../../envs/qdesign.yaml"
    params:
        config=lambda wc: qspecs.spec_json(
            {"device": config["device"], "studies": {wc.study: study_cfg(wc.study)}}
        ),
    shell:
        "python -m qdesign search-round --study {wildcards.study} --config-json {params.config:q} "
        "--round {wildcards.round} --history {input.history} --cells {input.cells} "
        "--out {output} > {log} 2>&1"


rule search_table:
    input:
        search_rounds,
    output:
        layout.table_file("{study}", registry.SEARCH_TABLE),
    log:
        layout.log_file("search_table", "{study}"),
    conda:
        "../../envs/qdesign.yaml"
    shell:
        "python -m qdesign search-table --study {wildcards.study} --rounds {input} "
        "--out {output} > {log} 2>&1"


rule search_figures:
    input:
        search=layout.table_file("{study}", registry.SEARCH_TABLE),
    output:
        figure_outputs(layout.FIGURE, "{study}", registry.SEARCH_FIGURES),
    log:
        layout.log_file("search_figures", "{study}"),
    conda:
        "../../envs/qdesign.yaml"
    params:
        out_dir=lambda wc, output: os.path.dirname(output[0]),
        formats=" ".join(config["plots"]["formats"]),
        dpi=config["plots"]["dpi"],
    shell:
        "python -m qdesign search-figures --search {input.search} --out-dir {params.out_dir} "
        "--formats {params.formats} --dpi {params.dpi} > {log} 2>&1"


rule report_search:
    input:
        search=layout.table_file("{study}", registry.SEARCH_TABLE),
    output:
        report(
            layout.report_page("{study}", "search"),
            caption="../report/search_tables.rst",
            category="{study}",
            subcategory="tables",
            labels={"table": "adaptive search"},
        ),
    log:
        layout.log_file("report_search", "{study}"),
    conda:
        "../../envs/qdesign.yaml"
    shell:
        "python -m qdesign report-search --search {input.search} --out {output} > {log} 2>&1"


# A shipped search (reference/<profile>/<study>/search.parquet): `snakemake
# reference` draws its figure and page, as for the shipped grids.
use rule search_figures as reference_search_figures with:
    input:
        search=layout.reference_table(registry.SEARCH_TABLE),
    output:
        figure_outputs(layout.REFERENCE_FIGURE, layout.REFERENCE_CATEGORY, registry.SEARCH_FIGURES),
    log:
        layout.log_file("reference_search_figures", "{profile}/{ref_study}"),


use rule report_search as reference_search_page with:
    input:
        search=layout.reference_table(registry.SEARCH_TABLE),
    output:
        report(
            layout.reference_report_page("{profile}", "{ref_study}", "search"),
            caption="../report/search_tables.rst",
            category=layout.REFERENCE_CATEGORY,
            subcategory="tables",
            labels={"table": "adaptive search"},
        ),
    log:
        layout.log_file("reference_search_page", "{profile}/{ref_study}"),
