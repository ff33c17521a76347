rule aggregate:
    """Every run's record into summary tables (CSV, Markdown, LaTeX, the seed's shape) and one curve table."""
    input:
        runs=expand(rules.train.output.summary, variant=VARIANTS, seed=SEEDS),
    output:
        runs=f"{RESULTS}/tables/runs.csv",
        curves=f"{RESULTS}/tables/curves.csv",
        summary_csv=f"{RESULTS}/tables/summary.csv",
        summary_md=f"{RESULTS}/tables/summary.md",
        summary_tex=f"{RESULTS}/tables/summary.tex",
        seed_table=f"{RESULTS}/tables/seed_table.md",
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
