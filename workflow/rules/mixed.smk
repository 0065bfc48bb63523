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
        "results/logs/sensitivity/{study}/w{width}-s{seed}.log",
    benchmark:
        "results/benchmarks/sensitivity/{study}/w{width}-s{seed}.tsv"
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
        "results/logs/retrain_budget/{study}/{method}/m{mean}/w{width}-s{seed}.log",
    benchmark:
        "results/benchmarks/retrain_budget/{study}/{method}/m{mean}/w{width}-s{seed}.tsv"
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
    report_mixed,


rule aggregate_mixed:
    input:
        summary=layout.TABLE.replace("{table}", "summary"),
        cells=mixed_cell_metrics,
        sensitivity=sensitivity_files,
    output:
        sensitivity=layout.TABLE.replace("{table}", "sensitivity"),
        mixed=layout.TABLE.replace("{table}", "mixed"),
        comparison=layout.TABLE.replace("{table}", "mixed_vs_uniform"),
    log:
        "results/logs/aggregate_mixed/{study}.log",
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
        summary=layout.TABLE.replace("{table}", "summary"),
        sensitivity=layout.TABLE.replace("{table}", "sensitivity"),
        mixed=layout.TABLE.replace("{table}", "mixed"),
        comparison=layout.TABLE.replace("{table}", "mixed_vs_uniform"),
    output:
        mixed_figure_outputs(layout.FIGURE, "{study}"),
    log:
        "results/logs/mixed_figures/{study}.log",
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
        comparison=layout.TABLE.replace("{table}", "mixed_vs_uniform"),
        mixed=layout.TABLE.replace("{table}", "mixed"),
    output:
        report(
            "results/{study}/report/mixed.html",
            caption="../report/mixed_tables.rst",
            category="{study}",
            subcategory="tables",
            labels={"table": "mixed precision"},
        ),
    log:
        "results/logs/report_mixed/{study}.log",
    conda:
        "../../envs/qdesign.yaml"
    shell:
        "python -m qdesign report-mixed --comparison {input.comparison} --mixed {input.mixed} "
        "--out {output} > {log} 2>&1"


# the mixed figures of a shipped reference study (reference/<profile>/<study>/mixed.parquet)
use rule mixed_figures as reference_mixed_figures with:
    input:
        summary="reference/{profile}/{ref_study}/summary.parquet",
        sensitivity="reference/{profile}/{ref_study}/sensitivity.parquet",
        mixed="reference/{profile}/{ref_study}/mixed.parquet",
        comparison="reference/{profile}/{ref_study}/mixed_vs_uniform.parquet",
    output:
        mixed_figure_outputs(
            "results/reference/{profile}/{ref_study}/figures/{figure}.{ext}",
            "reference {profile}: {ref_study}",
        ),
    log:
        "results/logs/reference_mixed_figures/{profile}/{ref_study}.log",
