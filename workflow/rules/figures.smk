# Figures of a study, drawn from its tables only: plotting options rerun no training.


rule figures:
    input:
        summary="results/{study}/summary.parquet",
        ecr="results/{study}/ecr.parquet",
        frontier="results/{study}/frontier.parquet",
    output:
        expand(
            "results/{{study}}/figures/{name}.{ext}",
            name=FIGURES,
            ext=config["plots"]["formats"],
        ),
    log:
        "results/logs/figures/{study}.log",
    params:
        formats=" ".join(config["plots"]["formats"]),
        dpi=config["plots"]["dpi"],
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/qdesign.yaml"
    shell:
        "python -m qdesign plot --summary {input.summary} --ecr {input.ecr} "
        "--frontier {input.frontier} --out-dir results/{wildcards.study}/figures "
        "--formats {params.formats} --dpi {params.dpi} > {log} 2>&1"
