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
    params:
        reference_bits=config["ecr_reference_bits"],
        memory=config["frontier_memory"],
        n_budgets=config["plots"]["n_budgets"],
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/qdesign.yaml"
    shell:
        "python -m qdesign aggregate --cells {input.cells} --summary {output.summary} "
        "--ecr {output.ecr} --frontier {output.frontier} "
        "--reference-bits {params.reference_bits} --frontier-memory {params.memory} "
        "--n-budgets {params.n_budgets} > {log} 2>&1"
