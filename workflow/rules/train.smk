# Float training: one job per (study, width, seed). One float network serves
# every bits value of its width, so adding a bits value trains no float model.


rule train_float:
    input:
        data=splits_file,
    output:
        model=f"{layout.FLOAT_DIR}/model.pt",
        metrics=f"{layout.FLOAT_DIR}/metrics.parquet",
    log:
        layout.log_file("train_float", layout.FLOAT_JOB),
    benchmark:
        layout.benchmark_file("train_float", layout.FLOAT_JOB)
    conda:
        "../../envs/qdesign.yaml"
    threads: job_threads
    resources:
        mem_mb=job_mem_mb,
        runtime=job_runtime("float"),
        gpu=job_gpu,
    params:
        # only what determines this network: edits elsewhere rerun nothing
        spec=lambda wc: qspecs.float_spec(config, wc.study, wc.width, wc.seed).to_json(),
    shell:
        "python -m qdesign train-float --spec {params.spec:q} --data {input.data} "
        "--out-dir $(dirname {output.metrics}) --threads {threads} > {log} 2>&1"
