# Figures of a study, drawn from its tables only: plotting options rerun no training.
# Every figure is marked for the Snakemake report (`snakemake --report report.html`),
# captioned by workflow/report/<figure>.rst, in a category per study.


# seconds of work: on a cluster it runs on the submitting node, not as a job
localrules:
    figures,
    reference_figures,
    reference,


rule figures:
    input:
        summary=layout.table_file("{study}", "summary"),
        ecr=layout.table_file("{study}", "ecr"),
        frontier=layout.table_file("{study}", "frontier"),
        scaling=layout.table_file("{study}", "scaling"),
    output:
        figure_outputs(layout.FIGURE, "{study}"),
    log:
        layout.log_file("figures", "{study}"),
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
        "python -m qdesign figures --summary {input.summary} --ecr {input.ecr} "
        "--frontier {input.frontier} --scaling {input.scaling} --out-dir {params.out_dir} "
        "--formats {params.formats} --dpi {params.dpi} > {log} 2>&1"


# Shipped reference results (reference/<profile>/<study>/*.parquet, tracked in
# git): `snakemake reference` redraws their figures in seconds, with no dataset
# and no training.
use rule figures as reference_figures with:
    input:
        summary=layout.reference_table("summary"),
        ecr=layout.reference_table("ecr"),
        frontier=layout.reference_table("frontier"),
        scaling=layout.reference_table("scaling"),
    output:
        figure_outputs(layout.REFERENCE_FIGURE, layout.REFERENCE_CATEGORY),
    log:
        layout.log_file("reference_figures", "{profile}/{ref_study}"),


rule reference:
    input:
        reference_targets(),
