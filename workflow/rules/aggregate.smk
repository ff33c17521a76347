from gwlora.aggregate import stage_config as aggregate_config
from gwlora.lr_search import plan_digest


rule aggregate:
    """Every run's record into summary tables (CSV, Markdown, LaTeX, the seed's shape), one curve table, the shifted test sets' tables, and study.json and findings.json for the deck."""
    input:
        runs=expand(rules.train.output.summary, variant=VARIANTS, seed=SEEDS),
        predictions=expand(rules.train.output.predictions, variant=VARIANTS, seed=SEEDS),
        shifted=expand(rules.evaluate.output.metrics, test_set=TEST_SETS),
        **lr_search_inputs(),  # with lr_search.extend: per variant, the files of the runs its search added (lr_search.smk)
        matched_filter=MATCHED_FILTER_FILES,  # the optimal detector's run, read like any run (train.variants.matched-filter)
        model=rules.base_model.output,
        data=expand(rules.dataset.output, split=[*SPLITS, *shifted_splits(config)]),
    output:
        runs=report(f"{RESULTS}/tables/runs.csv", caption="../report/runs.rst", category="Tables", labels={"table": "runs"}),
        curves=f"{RESULTS}/tables/curves.csv",
        summary_csv=report(f"{RESULTS}/tables/summary.csv", caption="../report/summary.rst", category="Tables", labels={"table": "summary"}),
        summary_md=f"{RESULTS}/tables/summary.md",
        summary_tex=f"{RESULTS}/tables/summary.tex",
        original_study_table=f"{RESULTS}/tables/original_study_table.md",
        study=f"{RESULTS}/tables/study.json",
        differences=report(f"{RESULTS}/tables/differences.csv", caption="../report/differences.rst", category="Tables", labels={"table": "paired differences"}),
        context=f"{RESULTS}/tables/context.csv",  # the context axis: AUC against 30 s and cost per context (header only without one)
        auc_by_snr=report(f"{RESULTS}/tables/auc_by_snr.csv", caption="../report/auc_by_snr.rst", category="Tables", labels={"table": "AUC by SNR"}),
        shift=report(f"{RESULTS}/tables/shift.csv", caption="../report/shift.rst", category="Tables", labels={"table": "shifted test sets"}),
        shift_runs=f"{RESULTS}/tables/shift_runs.csv",
        efficiency=report(f"{RESULTS}/tables/efficiency.csv", caption="../report/efficiency_table.rst", category="Tables", labels={"table": "detection efficiency"}),
        latency=report(f"{RESULTS}/tables/latency.csv", caption="../report/latency_table.rst", category="Tables", labels={"table": "latency"}),
        findings=f"{RESULTS}/tables/findings.json",  # what the deck states: verdicts, ratios, claims (gwlora.findings)
        # made from this plan: missing when variants, seeds, searches or test sets change, so the tables are made again
        # (gwlora.lr_search.plan_digest: Snakemake alone keeps old tables past an undecided lr-search checkpoint)
        plan=touch(f"{RESULTS}/tables/plan-{plan_digest(config)}.done"),
    params:
        run_dirs=lambda wc, input: [str(Path(p).parent) for p in [*input.runs, *added_summaries(input)]] + ([MATCHED_FILTER_RUN] if MATCHED_FILTER else []),
        out_dir=subpath(output.runs, parent=True),
        config=as_json(aggregate_config(config)),
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/aggregate.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate.tsv"
    shell:
        "python -m gwlora.aggregate {params.run_dirs:q} --model {input.model:q} --data {input.data:q} --config {params.config:q} --out {params.out_dir:q} --log {log:q}"
