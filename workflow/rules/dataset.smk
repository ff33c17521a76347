rule dataset:
    """One split of labelled windows (strain with injections, or audio), or a shifted test set (split shift-<name>)."""
    input:
        strain=strain_manifest,
    output:
        directory(f"{RESULTS}/data/{{split}}"),
    params:
        # through params: the between-workflow cache hashes params, not wildcards
        data=lambda wildcards: split_data(wildcards)["data"],
        seed=lambda wildcards: split_data(wildcards)["seed"],
        split=lambda wildcards: split_data(wildcards)["split"],
        test_set=lambda wildcards: split_data(wildcards)["test_set"],
        cache="resources/audio",  # shared download cache of audiofolder archives
        strain_option=lambda wildcards, input: "--strain-manifest" if input.strain else "",
    resources:
        runtime=per_split(estimate.dataset_runtime),
        mem_mb=per_split(estimate.dataset_mem_mb),
    # `snakemake --cache`: a split made once is reused by every experiment with the same data config
    # (Snakemake allows no benchmark: on a cached rule; the log has the timing)
    cache: "omit-software"
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/dataset/{{split}}.log",
    shell:
        "python -m gwlora.dataset --data-config {params.data:q} --seed {params.seed}"
        " --split {params.split} {params.test_set} {params.strain_option} {input.strain:q} --cache {params.cache:q} --out {output:q} --log {log:q}"
