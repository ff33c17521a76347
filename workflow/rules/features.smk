rule features:
    """Whisper log-mel features of one split, computed once and shared by every run."""
    input:
        data=rules.dataset.output,
        model=rules.base_model.output,
    output:
        directory(f"{RESULTS}/features/{{split}}"),
    params:
        batch_size=config["features"]["batch_size"],
    resources:
        runtime=per_split(estimate.features_runtime),
        mem_mb=per_split(estimate.features_mem_mb),
    # `snakemake --cache`: reused by every experiment with the same data and model (the hash covers both rules upstream)
    cache: "omit-software"
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/features/{{split}}.log",
    shell:
        "python -m gwlora.features --data {input.data:q} --model {input.model:q}"
        " --batch-size {params.batch_size} --out {output:q} --log {log:q}"
