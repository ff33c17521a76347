rule aggregate:
    """Every run's record into summary tables (CSV, Markdown, LaTeX, the seed's shape), one curve table, and study.json for the deck."""
    input:
        runs=expand(rules.train.output.summary, variant=VARIANTS, seed=SEEDS),
        predictions=expand(rules.train.output.predictions, variant=VARIANTS, seed=SEEDS),
        model=rules.base_model.output,
        data=expand(rules.dataset.output, split=SPLITS),
    output:
        runs=report(f"{RESULTS}/tables/runs.csv", caption="../report/runs.rst", category="Tables", labels={"table": "runs"}),
        curves=f"{RESULTS}/tables/curves.csv",
        summary_csv=report(f"{RESULTS}/tables/summary.csv", caption="../report/summary.rst", category="Tables", labels={"table": "summary"}),
        summary_md=f"{RESULTS}/tables/summary.md",
        summary_tex=f"{RESULTS}/tables/summary.tex",
        original_study_table=f"{RESULTS}/tables/original_study_table.md",
        study=f"{RESULTS}/tables/study.json",
        differences=report(f"{RESULTS}/tables/differences.csv", caption="../report/differences.rst", category="Tables", labels={"table": "paired differences"}),
        auc_by_snr=report(f"{RESULTS}/tables/auc_by_snr.csv", caption="../report/auc_by_snr.rst", category="Tables", labels={"table": "AUC by SNR"}),
        latency=report(f"{RESULTS}/tables/latency.csv", caption="../report/latency_table.rst", category="Tables", labels={"table": "latency"}),
    params:
        run_dirs=lambda wc, input: [str(Path(p).parent) for p in input.runs],
        out_dir=subpath(output.runs, parent=True),
        lr_selection=config["train"]["lr_selection"],
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/aggregate.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate.tsv"
    shell:
        "python -m gwlora.aggregate {params.run_dirs:q} --model {input.model:q} --data {input.data:q} --lr-selection {params.lr_selection} --out {params.out_dir:q} --log {log:q}"
