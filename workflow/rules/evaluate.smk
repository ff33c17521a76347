rule evaluate:
    """Score one run's best checkpoint on one shifted test set (evaluation.test_sets), as its test split was scored."""
    input:
        run=rules.train.output.summary,
        features=f"{RESULTS}/features/{SHIFT_PREFIX}{{test_set}}",
        model=rules.base_model.output,
    output:
        predictions=f"{RESULTS}/runs/{{variant}}/seed{{seed}}/shift/{{test_set}}/predictions.csv",
        metrics=f"{RESULTS}/runs/{{variant}}/seed{{seed}}/shift/{{test_set}}/metrics.json",
    params:
        run_dir=subpath(input.run, parent=True),
        out_dir=subpath(output.metrics, parent=True),
        device=config["train"]["device"],
    resources:
        gpu=TRAIN_GPUS,  # on the device the run trained on, so that its numbers are the test split's kind
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/evaluate/{{test_set}}/{{variant}}/seed{{seed}}.log",
    shell:
        "python -m gwlora.gpus --device {params.device:q} --"
        " python -m gwlora.evaluate --run {params.run_dir:q} --features {input.features:q} --model {input.model:q}"
        " --device {params.device:q} --out {params.out_dir:q} --log {log:q}"
