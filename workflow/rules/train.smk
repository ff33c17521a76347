rule train:
    """Train one variant with one seed on the cached features."""
    input:
        unpack(encoder_cache_inputs),  # frozen and partial: their frozen prefix's outputs (train, val), computed once
        train=expand(rules.features.output, split="train"),
        val=expand(rules.features.output, split="val"),
        test=expand(rules.features.output, split="test"),
        model=rules.base_model.output,
    output:
        curve=f"{RESULTS}/runs/{{variant}}/seed{{seed}}/curve.csv",
        summary=f"{RESULTS}/runs/{{variant}}/seed{{seed}}/summary.json",
        predictions=f"{RESULTS}/runs/{{variant}}/seed{{seed}}/predictions.csv",
    params:
        model=lambda wc: as_json(run_model_config(config["model"], RUN_VARIANTS[wc.variant])),  # the run's own context
        train=as_json(train_stage_settings(config["train"])),  # without the keys the stage does not read: changing them retrains nothing
        variant=lambda wc: as_json(RUN_VARIANTS[wc.variant].to_dict()),
        run_dir=subpath(output.summary, parent=True),
        device=config["train"]["device"],
        encoder_outputs=encoder_cache_args,
    threads: config["train"]["threads"]
    resources:
        gpu=TRAIN_GPUS,  # one GPU per job where it trains on one; gwlora.gpus picks a free one (see README)
        # minutes, from the model and data sizes, the run's context and what it trains on (gwlora.resources)
        runtime=per_run(estimate.train_runtime),
        mem_mb=per_run(estimate.train_mem_mb),
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/train/{{variant}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{variant}}/seed{{seed}}.tsv"
    shell:
        "python -m gwlora.gpus --device {params.device:q} --"
        " python -m gwlora.train --train-features {input.train:q} --val-features {input.val:q}"
        " --test-features {input.test:q} --model {input.model:q}{params.encoder_outputs}"
        " --model-config {params.model:q} --train-config {params.train:q}"
        " --variant {params.variant:q} --seed {wildcards.seed} --threads {threads}"
        " --out {params.run_dir:q} --log {log:q}"
