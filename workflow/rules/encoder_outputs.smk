rule encoder_outputs:
    """What a frozen encoder prefix makes of one split, computed once per context and cache point (gwlora.encoder_cache)."""
    input:
        features=f"{RESULTS}/features/{{split}}",
        model=rules.base_model.output,
    output:
        directory(ENCODER_OUTPUTS),
    wildcard_constraints:
        point=r"pooled|top[1-9][0-9]*-input",
        split="|".join(CACHED_SPLITS),
    params:
        model=lambda wc: as_json({**config["model"], "context": wc.context}),
        # only what the cache depends on: changing the lrs, epochs or schedule recomputes nothing
        train=as_json({k: config["train"][k] for k in ("device", "precision", "batch_size", "threads")}),
        device=config["train"]["device"],
    threads: config["train"]["threads"]
    resources:
        gpu=TRAIN_GPUS,
        runtime=lambda wc, attempt: estimate.encoder_outputs_runtime(config, wc.split, wc.context, attempt=attempt),
        mem_mb=lambda wc, attempt: estimate.encoder_outputs_mem_mb(config, wc.split, wc.context, wc.point, attempt=attempt),
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/encoder_outputs/{{context}}/{{point}}/{{split}}.log",
    shell:
        "python -m gwlora.gpus --device {params.device:q} --"
        " python -m gwlora.encoder_cache --features {input.features:q} --model {input.model:q}"
        " --model-config {params.model:q} --train-config {params.train:q} --point {wildcards.point}"
        " --threads {threads} --out {output:q} --log {log:q}"
