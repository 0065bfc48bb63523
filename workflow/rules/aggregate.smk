# Per-study tables: summary (every cell), ECR (per width x bits, seed means),
# frontier (Pareto set and best cell per memory budget).


# seconds of work: on a cluster it runs on the submitting node, not as a job
localrules:
    aggregate,


rule aggregate:
    input:
        cells=cell_metrics,
    output:
        summary="results/{study}/summary.parquet",
        ecr="results/{study}/ecr.parquet",
        frontier="results/{study}/frontier.parquet",
    log:
        "results/logs/aggregate/{study}.log",
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
        summary=layout.TABLE.replace("{table}", "summary"),
    output:
        layout.TABLE.replace("{table}", "scaling"),
    log:
        "results/logs/scaling/{study}.log",
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
        frontier=layout.TABLE.replace("{table}", "frontier"),
        summary=layout.TABLE.replace("{table}", "summary"),
        data=data_file,
    output:
        "results/{study}/export/manifest.parquet",
    log:
        "results/logs/export_frontier/{study}.log",
    conda:
        "../../envs/qdesign.yaml"
    params:
        seed=config["export_seed"],
    shell:
        "python -m qdesign export-frontier results/{wildcards.study} --data {input.data} "
        "--out-dir $(dirname {output}) --seed {params.seed} --force > {log} 2>&1"


rule export:
    input:
        [f"results/{study}/export/manifest.parquet" for study in STUDIES],
