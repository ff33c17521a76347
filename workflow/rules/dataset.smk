rule dataset:
    """One split of labelled multi-detector strain windows: simulated or GWOSC noise, with BBH injections."""
    input:
        strain=strain_manifest,
    output:
        directory(f"{RESULTS}/data/{{split}}"),
    params:
        data=as_json(config["data"]),
        seed=config["seed"],
        split=lambda wildcards: wildcards.split,  # through params: the between-workflow cache hashes params, not wildcards
        cache="resources/audio",  # shared download cache of audiofolder archives
        strain_option="--strain-manifest" if config["data"]["source"] == "gwosc" else "",
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
        " --split {params.split} {params.strain_option} {input.strain:q} --cache {params.cache:q} --out {output:q} --log {log:q}"
