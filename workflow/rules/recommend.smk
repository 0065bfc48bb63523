# The design model's loop closed (studies with recommend.budgets; docs/scaling.md):
# the designs `qdesign recommend` names for the budgets are trained as ordinary
# cells of the study (train_float / retrain; cells already trained are reused),
# and recommendations.parquet sets each measured test error beside the interval
# the law predicted. The designs depend on the study's tables, so they are a
# checkpoint: Snakemake learns the cells to train once they are chosen.


localrules:
    recommend_designs,
    recommendations,


checkpoint recommend_designs:
    input:
        summary=layout.table_file("{study}", "summary"),
        scaling=layout.table_file("{study}", "scaling"),
    output:
        layout.table_file("{study}", "designs"),
    log:
        layout.log_file("recommend_designs", "{study}"),
    conda:
        "../../envs/qdesign.yaml"
    params:
        budgets=lambda wc: " ".join(str(b) for b in study_cfg(wc.study)["recommend"]["budgets"]),
        memory=lambda wc: study_cfg(wc.study)["recommend"]["memory"],
    shell:
        "python -m qdesign recommend-designs --summary {input.summary} --scaling {input.scaling} "
        "--budgets {params.budgets} --memory {params.memory} --out {output} > {log} 2>&1"


rule recommendations:
    input:
        designs=layout.table_file("{study}", "designs"),
        summary=layout.table_file("{study}", "summary"),
        cells=recommended_cell_metrics,
    output:
        layout.table_file("{study}", "recommendations"),
    log:
        layout.log_file("recommendations", "{study}"),
    conda:
        "../../envs/qdesign.yaml"
    shell:
        "python -m qdesign recommendations --designs {input.designs} --summary {input.summary} "
        "--cells {input.cells} --out {output} > {log} 2>&1"
