# Dataset -> results/data/{dataset}.pt (uint8 images, labels, normalisation).
# A local rule: on a cluster, downloads happen where the network is.


localrules:
    prepare_data,


rule prepare_data:
    output:
        "results/data/{dataset}.pt",
    log:
        "results/logs/prepare_data/{dataset}.log",
    conda:
        "../../envs/qdesign.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        # only digits has a seeded test split. data_dir and download are
        # provenance too: changing them re-prepares the data, which retrains
        # the studies on it (see config/README.md)
        split_seed=lambda wc: config["split_seed"] if wc.dataset == "digits" else 0,
        source=prepare_args,
    shell:
        "python -m qdesign prepare-data --dataset {wildcards.dataset} "
        "{params.source} --split-seed {params.split_seed} "
        "--out {output} > {log} 2>&1"
