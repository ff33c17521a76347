rule base_model:
    """Fetch the pretrained Whisper encoder (hub id or local directory) or build the random demo one."""
    output:
        directory(f"{RESULTS}/base_model"),
    params:
        model=as_json(config["model"]),
        seed=config["seed"],
    localrule: True  # downloads from the hub: compute nodes often have no internet
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/base_model.log",
    benchmark:
        f"{RESULTS}/benchmarks/base_model.tsv"
    shell:
        "python -m gwlora.base_model --model-config {params.model:q} --seed {params.seed}"
        " --out {output:q} --log {log:q}"
