rule dataset:
    """One split of labelled multi-detector strain windows: simulated or GWOSC noise, with BBH injections."""
    input:
        strain=strain_manifest,
    output:
        directory(f"{RESULTS}/data/{{split}}"),
    params:
        data=as_json(config["data"]),
        seed=config["seed"],
        cache="resources/audio",  # shared download cache of audiofolder archives
        strain=lambda wc, input: f"--strain-manifest {shlex.quote(input.strain[0])}" if input.strain else "",
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/dataset/{{split}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/dataset/{{split}}.tsv"
    shell:
        "python -m gwlora.dataset --data-config {params.data:q} --seed {params.seed}"
        " --split {wildcards.split} {params.strain} --cache {params.cache:q} --out {output:q} --log {log:q}"
