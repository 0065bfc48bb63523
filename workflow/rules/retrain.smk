# Quantization and retraining: one job per (study, method, width, bits, seed). Loads
# the float network, sets L2-optimal steps, records the direct-quantization
# error, retrains with the straight-through estimator, records the result.


rule retrain:
    input:
        data=splits_file,
        float_model=f"{layout.FLOAT_DIR}/model.pt",
    output:
        model=f"{layout.QUANT_DIR}/model.pt",
        metrics=f"{layout.QUANT_DIR}/metrics.parquet",
    log:
        layout.log_file("retrain", layout.QUANT_JOB),
    benchmark:
        layout.benchmark_file("retrain", layout.QUANT_JOB)
    conda:
        "../../envs/qdesign.yaml"
    threads: job_threads
    resources:
        mem_mb=job_mem_mb,
        runtime=job_runtime("retrain"),
        gpu=job_gpu,
    params:
        # {bits}: 4 (uniform) or 8-2-2-4 (a mixed-precision pattern, first layer to last)
        spec=lambda wc: qspecs.quant_spec(
            config, wc.study, wc.width, Precision.parse(wc.bits), wc.seed, wc.method
        ).to_json(),
    shell:
        "python -m qdesign retrain --spec {params.spec:q} --data {input.data} "
        "--float-checkpoint {input.float_model} --out-dir $(dirname {output.metrics}) "
        "--threads {threads} > {log} 2>&1"
