# Per-study tables: summary (every cell), ECR (per width x bits, seed means),
# frontier (Pareto set and best cell per memory budget).


# seconds of work: on a cluster it runs on the submitting node, not as a job
localrules:
    aggregate,


rule aggregate:
    input:
        cells=cell_metrics,
    output:
        summary=layout.table_file("{study}", "summary"),
        ecr=layout.table_file("{study}", "ecr"),
        frontier=layout.table_file("{study}", "frontier"),
    log:
        layout.log_file("aggregate", "{study}"),
    conda:
        "../../envs/qdesign.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        reference_bits=config["ecr_reference_bits"],
        memory=config["frontier_memory"],
        n_budgets=config["plots"]["n_budgets"],
    shell:
        "python -m qdesign aggregate --cells {input.cells} --summary {output.summary} "
        "--ecr {output.ecr} --frontier {output.frontier} "
        "--reference-bits {params.reference_bits} --frontier-memory {params.memory} "
        "--n-budgets {params.n_budgets} > {log} 2>&1"


# The predictive design model: err(N, b) = E + A (N g(b))^-alpha fitted to the
# seed means, bootstrap intervals over seeds, leave-one-width/bits-out CV
# (qdesign.analysis.scaling; docs/scaling.md).
localrules:
    scaling,


rule scaling:
    input:
        summary=layout.table_file("{study}", "summary"),
    output:
        layout.table_file("{study}", "scaling"),
    log:
        layout.log_file("scaling", "{study}"),
    conda:
        "../../envs/qdesign.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        n_boot=200,
    shell:
        "python -m qdesign scaling --summary {input.summary} --out {output} "
        "--n-boot {params.n_boot} > {log} 2>&1"


# Deployable bytes: the Pareto-frontier cells of a study as packed integer
# weights and ONNX, each verified on the raw test pixels before it is written,
# named {method}-w{width}-b{bits}-s{seed} (`snakemake export`; docs/export.md).
# The seed of each cell: export_seed (default best_val: lowest validation error).
# results/{study}/export/ is the pipeline's: --force lets a rerun replace the
# files of the previous export (never an input, never a non-regular file).
localrules:
    export_frontier,
    export,


rule export_frontier:
    input:
        frontier=layout.table_file("{study}", "frontier"),
        summary=layout.table_file("{study}", "summary"),
        data=data_file,
    output:
        layout.EXPORT_MANIFEST,
    log:
        layout.log_file("export_frontier", "{study}"),
    conda:
        "../../envs/qdesign.yaml"
    params:
        study_dir=lambda wc: layout.study_dir(wc.study),
        seed=config["export_seed"],
    shell:
        "python -m qdesign export-frontier {params.study_dir} --data {input.data} "
        "--out-dir $(dirname {output}) --seed {params.seed} --force > {log} 2>&1"


rule export:
    input:
        [layout.export_manifest(study) for study in STUDIES],
