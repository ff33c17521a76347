# Where each run's scores on a shifted test set go: beside its training record
SHIFT_SCORES = f"{RESULTS}/runs/{{variant}}/seed{{seed}}/shift/{{{{test_set}}}}"


rule evaluate:
    """Score every run's best checkpoint on one shifted test set (evaluation.test_sets), as its test split was scored."""
    input:
        runs=expand(rules.train.output.summary, variant=VARIANTS, seed=SEEDS),
        features=f"{RESULTS}/features/{SHIFT_PREFIX}{{test_set}}",
        model=rules.base_model.output,
    output:
        # one process for all runs: the base model and the test set are loaded once, not once a run
        predictions=expand(f"{SHIFT_SCORES}/predictions.csv", variant=VARIANTS, seed=SEEDS),
        metrics=expand(f"{SHIFT_SCORES}/metrics.json", variant=VARIANTS, seed=SEEDS),
    params:
        run_dirs=lambda wildcards, input: [str(Path(p).parent) for p in input.runs],
        device=config["train"]["device"],
    resources:
        gpu=TRAIN_GPUS,  # on the device the runs trained on, so that their numbers are the test split's kind
        runtime=lambda wildcards, attempt: estimate.evaluate_runtime(config, SHIFT_PREFIX + wildcards.test_set, attempt=attempt),
        mem_mb=lambda wildcards, attempt: estimate.evaluate_mem_mb(config, SHIFT_PREFIX + wildcards.test_set, attempt=attempt),
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/evaluate/{{test_set}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{test_set}}.tsv"
    shell:
        "python -m gwlora.gpus --device {params.device:q} --"
        " python -m gwlora.evaluate --run {params.run_dirs:q} --features {input.features:q} --model {input.model:q}"
        " --device {params.device:q} --name {wildcards.test_set} --log {log:q}"
