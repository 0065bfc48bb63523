# Quantization and retraining: one job per (study, width, bits, seed). Loads
# the float network, sets L2-optimal steps, records the direct-quantization
# error, retrains with the straight-through estimator, records the result.


rule retrain:
    input:
        data=data_file,
        float_model="results/{study}/float/w{width}-s{seed}/model.pt",
    output:
        model="results/{study}/b{bits}/w{width}-s{seed}/model.pt",
        metrics="results/{study}/b{bits}/w{width}-s{seed}/metrics.parquet",
    log:
        "results/logs/retrain/{study}/b{bits}/w{width}-s{seed}.log",
    benchmark:
        "results/benchmarks/retrain/{study}/b{bits}/w{width}-s{seed}.tsv"
    params:
        spec=lambda wc: qconfig.spec_json(
            qconfig.quantized_spec(config, wc.study, wc.width, wc.bits, wc.seed)
        ),
    threads: job_threads
    resources:
        mem_mb=job_mem_mb,
        runtime=job_runtime("retrain"),
        gpu=job_gpu,
    conda:
        "../../envs/qdesign.yaml"
    shell:
        "python -m qdesign retrain --spec {params.spec:q} --data {input.data} "
        "--float-checkpoint {input.float_model} --out-dir $(dirname {output.metrics}) "
        "--threads {threads} > {log} 2>&1"
