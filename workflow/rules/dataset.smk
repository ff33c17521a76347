rule dataset:
    """Simulate one split of labelled two-detector strain windows."""
    output:
        directory(f"{RESULTS}/data/{{split}}"),
    params:
        data=as_json(config["data"]),
        seed=config["seed"],
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/dataset/{{split}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/dataset/{{split}}.tsv"
    shell:
        "python -m gwlora.dataset --data-config {params.data:q} --seed {params.seed}"
        " --split {wildcards.split} --out {output:q} --log {log:q}"
