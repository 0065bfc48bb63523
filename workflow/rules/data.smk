# Dataset -> results/data/{dataset}.pt (uint8 images, labels, normalisation).
# A local rule: on a cluster, downloads happen where the network is.


localrules:
    prepare_data,


rule prepare_data:
    output:
        "results/data/{dataset}.pt",
    log:
        "results/logs/prepare_data/{dataset}.log",
    params:
        # only digits has a seeded test split
        split_seed=lambda wc: config["split_seed"] if wc.dataset == "digits" else 0,
        download="--download" if config["download"] else "--no-download",
        data_dir=config["data_dir"],
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/qdesign.yaml"
    shell:
        "python -m qdesign prepare-data --dataset {wildcards.dataset} "
        "--data-dir {params.data_dir:q} {params.download} --split-seed {params.split_seed} "
        "--out {output} > {log} 2>&1"
