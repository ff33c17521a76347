rule aggregate:
    """Every run's record into one summary table (CSV and Markdown) and one curve table."""
    input:
        runs=expand(rules.train.output.summary, variant=VARIANTS, seed=SEEDS),
    output:
        runs=f"{RESULTS}/tables/runs.csv",
        curves=f"{RESULTS}/tables/curves.csv",
        summary_csv=f"{RESULTS}/tables/summary.csv",
        summary_md=f"{RESULTS}/tables/summary.md",
    params:
        run_dirs=lambda wc, input: [str(Path(p).parent) for p in input.runs],
        out_dir=subpath(output.runs, parent=True),
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/aggregate.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate.tsv"
    shell:
        "python -m gwlora.aggregate {params.run_dirs:q} --out {params.out_dir:q} --log {log:q}"
