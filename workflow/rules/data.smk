# Dataset -> results/data/{dataset}.pt (uint8 images, labels, normalisation)
# -> results/data/splits/{split}.pt (a normalised split, mapped by the
# training jobs of every study with that split). Local rules: on a cluster, downloads happen where the
# network is, and a split takes a second.


localrules:
    prepare_data,
    split_data,


rule prepare_data:
    output:
        layout.DATA_FILE,
    log:
        layout.log_file("prepare_data", "{dataset}"),
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


rule split_data:
    input:
        data=lambda wc: layout.data_file(SPLITS[wc.split]["dataset"]),
    output:
        layout.SPLITS_FILE,
    log:
        layout.log_file("split_data", "{split}"),
    conda:
        "../../envs/qdesign.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        split=lambda wc: json.dumps(SPLITS[wc.split]),
    shell:
        "python -m qdesign split-data --data {input.data} --split {params.split:q} "
        "--out {output} > {log} 2>&1"
