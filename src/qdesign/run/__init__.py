"""Running things: the command line, the warm worker, Snakemake invocation, cluster resources, shipped references."""
