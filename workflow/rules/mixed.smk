# Mixed precision (studies with a `mixed` section; docs/mixed.md): the layer
# sensitivity of every float network, cells with one word length per layer
# (explicit patterns go through the `retrain` rule as b8-2-2-4; budget cells
# allocate theirs from the sensitivity table), and the tables and figures that
# put them beside the uniform cells.


rule sensitivity:
    input:
        data=splits_file,
        float_model=f"{layout.FLOAT_DIR}/model.pt",
    output:
        layout.SENSITIVITY_FILE,
    log:
        layout.log_file("sensitivity", layout.FLOAT_JOB),
    benchmark:
        layout.benchmark_file("sensitivity", layout.FLOAT_JOB)
    conda:
        "../../envs/qdesign.yaml"
    threads: job_threads
    resources:
        mem_mb=job_mem_mb,
        runtime=job_runtime("retrain"),
        gpu=job_gpu,
    params:
        spec=lambda wc: qspecs.float_spec(config, wc.study, wc.width, wc.seed).to_json(),
        bits=lambda wc: " ".join(str(b) for b in study_cfg(wc.study)["mixed"]["candidate_bits"]),
    shell:
        "python -m qdesign sensitivity --spec {params.spec:q} --data {input.data} "
        "--float-checkpoint {input.float_model} --bits {params.bits} --out {output} "
        "--threads {threads} > {log} 2>&1"


rule retrain_budget:
    input:
        data=splits_file,
        float_model=f"{layout.FLOAT_DIR}/model.pt",
        sensitivity=layout.SENSITIVITY_FILE,
    output:
        model=f"{layout.BUDGET_DIR}/model.pt",
        metrics=f"{layout.BUDGET_DIR}/metrics.parquet",
    log:
        layout.log_file("retrain_budget", layout.BUDGET_JOB),
    benchmark:
        layout.benchmark_file("retrain_budget", layout.BUDGET_JOB)
    conda:
        "../../envs/qdesign.yaml"
    threads: job_threads
    resources:
        mem_mb=job_mem_mb,
        runtime=job_runtime("retrain"),
        gpu=job_gpu,
    params:
        spec=lambda wc: qspecs.budget_spec(
            config, wc.study, wc.width, float(wc.mean), wc.seed, wc.method
        ).to_json(),
    shell:
        "python -m qdesign retrain --spec {params.spec:q} --data {input.data} "
        "--float-checkpoint {input.float_model} --sensitivity {input.sensitivity} "
        "--out-dir $(dirname {output.metrics}) --threads {threads} > {log} 2>&1"


# seconds of work: on a cluster they run on the submitting node, not as jobs
localrules:
    aggregate_mixed,
    mixed_figures,
    reference_mixed_figures,
    reference_report_mixed,
    report_mixed,


rule aggregate_mixed:
    input:
        summary=layout.table_file("{study}", "summary"),
        cells=mixed_cell_metrics,
        sensitivity=sensitivity_files,
    output:
        sensitivity=layout.table_file("{study}", "sensitivity"),
        mixed=layout.table_file("{study}", "mixed"),
        comparison=layout.table_file("{study}", "mixed_vs_uniform"),
    log:
        layout.log_file("aggregate_mixed", "{study}"),
    conda:
        "../../envs/qdesign.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        memory=config["frontier_memory"],
    shell:
        "python -m qdesign aggregate-mixed --summary {input.summary} --cells {input.cells} "
        "--sensitivity {input.sensitivity} --frontier-memory {params.memory} "
        "--out-sensitivity-table {output.sensitivity} --out-mixed {output.mixed} "
        "--out-comparison {output.comparison} > {log} 2>&1"


rule mixed_figures:
    input:
        summary=layout.table_file("{study}", "summary"),
        sensitivity=layout.table_file("{study}", "sensitivity"),
        mixed=layout.table_file("{study}", "mixed"),
        comparison=layout.table_file("{study}", "mixed_vs_uniform"),
    output:
        mixed_figure_outputs(layout.FIGURE, "{study}"),
    log:
        layout.log_file("mixed_figures", "{study}"),
    conda:
        "../../envs/qdesign.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        out_dir=lambda wc, output: os.path.dirname(output[0]),
        formats=" ".join(config["plots"]["formats"]),
        dpi=config["plots"]["dpi"],
    shell:
        "python -m qdesign mixed-figures --summary {input.summary} --sensitivity {input.sensitivity} "
        "--mixed {input.mixed} --comparison {input.comparison} --out-dir {params.out_dir} "
        "--formats {params.formats} --dpi {params.dpi} > {log} 2>&1"


rule report_mixed:
    input:
        comparison=layout.table_file("{study}", "mixed_vs_uniform"),
        mixed=layout.table_file("{study}", "mixed"),
    output:
        report(
            layout.report_page("{study}", "mixed"),
            caption="../report/mixed_tables.rst",
            category="{study}",
            subcategory="tables",
            labels={"table": "mixed precision"},
        ),
    log:
        layout.log_file("report_mixed", "{study}"),
    conda:
        "../../envs/qdesign.yaml"
    shell:
        "python -m qdesign report-mixed --comparison {input.comparison} --mixed {input.mixed} "
        "--out {output} > {log} 2>&1"


# the mixed figures of a shipped reference study (reference/<profile>/<study>/mixed.parquet)
use rule mixed_figures as reference_mixed_figures with:
    input:
        summary=layout.reference_table("summary"),
        sensitivity=layout.reference_table("sensitivity"),
        mixed=layout.reference_table("mixed"),
        comparison=layout.reference_table("mixed_vs_uniform"),
    output:
        mixed_figure_outputs(layout.REFERENCE_FIGURE, layout.REFERENCE_CATEGORY),
    log:
        layout.log_file("reference_mixed_figures", "{profile}/{ref_study}"),


use rule report_mixed as reference_report_mixed with:
    input:
        comparison=layout.reference_table("mixed_vs_uniform"),
        mixed=layout.reference_table("mixed"),
    output:
        report(
            layout.reference_report_page("{profile}", "{ref_study}", "mixed"),
            caption="../report/mixed_tables.rst",
            category=layout.REFERENCE_CATEGORY,
            subcategory="tables",
            labels={"table": "mixed precision"},
        ),
    log:
        layout.log_file("reference_report_mixed", "{profile}/{ref_study}"),
