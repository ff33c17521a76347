# train.lr_search: a variant whose selected lr sits at an edge of its grid trains one more rate past that edge,
# round by round, until the selected lr is interior or lr_search.max_extensions rates were added there. Each round
# is a checkpoint job that reads its runs' validation records only (gwlora.lr_search); `snakemake -n` shows round 0
# and that the DAG is re-evaluated after it, and a rerun after a kill resumes from the rounds already decided.
# Its helpers (decided, searched_lrs, final_lrs, lr_search_inputs, ...) are in common.smk.


checkpoint lr_search:
    """One round of a variant's lr search: from the validation records of its runs so far, the rate still to train."""
    input:
        runs=lambda wc: expand(rules.train.output.summary, variant=[RUN_OF[wc.search, lr] for lr in searched_lrs(wc.search, int(wc.round))], seed=SEEDS),
    output:
        decision=f"{RESULTS}/lr_search/{{search}}/round{{round}}.json",
    params:
        grid=lambda wc: [repr(lr) for lr in LR_GRIDS[wc.search]],
        run_dirs=lambda wc, input: [str(Path(p).parent) for p in input.runs],
        max_extensions=LR_SEARCH["max_extensions"],
        metric=config["train"]["lr_selection"],
    localrule: True  # reads a few JSON files
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/lr_search/{{search}}/round{{round}}.log",
    shell:
        "python -m gwlora.lr_search --variant {wildcards.search:q} --grid {params.grid} --runs {params.run_dirs:q}"
        " --max-extensions {params.max_extensions} --metric {params.metric} --out {output.decision:q} --log {log:q}"


rule evaluate_extension:
    """Score one run an lr search added on one shifted test set, as the evaluate rule scores the grids' runs."""
    input:
        run=rules.train.output.summary,
        features=f"{RESULTS}/features/{SHIFT_PREFIX}{{test_set}}",
        model=rules.base_model.output,
    output:
        predictions=f"{RESULTS}/runs/{{variant}}/seed{{seed}}/shift/{{test_set}}/predictions.csv",
        metrics=f"{RESULTS}/runs/{{variant}}/seed{{seed}}/shift/{{test_set}}/metrics.json",
    wildcard_constraints:
        variant="|".join(map(re.escape, EXTENSIONS)) or "(?!)",  # the grids' runs are the evaluate rule's
    params:
        run_dir=subpath(input.run, parent=True),
        device=config["train"]["device"],
    resources:
        gpu=TRAIN_GPUS,
        runtime=lambda wildcards, attempt: estimate.evaluate_runtime(config, SHIFT_PREFIX + wildcards.test_set, attempt=attempt),
        mem_mb=lambda wildcards, attempt: estimate.evaluate_mem_mb(config, SHIFT_PREFIX + wildcards.test_set, attempt=attempt),
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/evaluate_extension/{{test_set}}/{{variant}}/seed{{seed}}.log",
    shell:
        "python -m gwlora.gpus --device {params.device:q} --"
        " python -m gwlora.evaluate --run {params.run_dir:q} --features {input.features:q} --model {input.model:q}"
        " --device {params.device:q} --name {wildcards.test_set} --log {log:q}"
