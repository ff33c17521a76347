import shlex

from gwlora.cache_points import CACHED_SPLITS, variant_cache_point

ENCODER_OUTPUTS = f"{RESULTS}/encoder_outputs/{{context}}/{{point}}/{{split}}"


def encoder_cache_inputs(wildcards):
    """The train rule's cached encoder outputs (train and val): a frozen or partial variant's under train.encoder_cache auto, else none.

    One cache per (context, cache point, split), so every lr and seed of a variant, and every variant with the same frozen prefix, shares it.
    """
    variant = VARIANTS[wildcards.variant]
    point = variant_cache_point(config["train"], variant)
    if point is None:
        return {}
    context = run_model_config(config["model"], variant)["context"]
    return {f"{split}_encoder_outputs": ENCODER_OUTPUTS.format(context=context, point=point, split=split) for split in CACHED_SPLITS}


def encoder_cache_args(wildcards, input):
    """The train stage's --train-encoder-outputs and --val-encoder-outputs, where the job has them."""
    return "".join(f" --{split}-encoder-outputs {shlex.quote(input[f'{split}_encoder_outputs'])}"
                   for split in CACHED_SPLITS if f"{split}_encoder_outputs" in input.keys())


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
