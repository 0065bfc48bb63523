# Figures of a study, drawn from its tables only: plotting options rerun no training.


# seconds of work: on a cluster it runs on the submitting node, not as a job
localrules:
    figures,


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


# Shipped reference results (reference/<profile>/<study>/*.parquet, tracked in
# git): `snakemake reference` redraws their figures in seconds, with no dataset
# and no training.


localrules:
    reference_figures,
    reference,


rule reference_figures:
    input:
        summary="reference/{profile}/{ref_study}/summary.parquet",
        ecr="reference/{profile}/{ref_study}/ecr.parquet",
        frontier="reference/{profile}/{ref_study}/frontier.parquet",
    output:
        expand(
            "results/reference/{{profile}}/{{ref_study}}/figures/{name}.{ext}",
            name=FIGURES,
            ext=config["plots"]["formats"],
        ),
    log:
        "results/logs/reference_figures/{profile}/{ref_study}.log",
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
        "--frontier {input.frontier} "
        "--out-dir results/reference/{wildcards.profile}/{wildcards.ref_study}/figures "
        "--formats {params.formats} --dpi {params.dpi} > {log} 2>&1"


rule reference:
    input:
        reference_targets(),
