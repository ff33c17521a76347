rule plot:
    """The presentation's two figures (validation AUC and loss against training time), rank, parameter, cost and latency figures."""
    input:
        curves=rules.aggregate.output.curves,
        runs=rules.aggregate.output.runs,
    output:
        expand(f"{RESULTS}/figures/{{name}}.{{fmt}}", name=figure_names(), fmt=["png", "svg"]),
    params:
        out_dir=subpath(output[0], parent=True),
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/plot.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot.tsv"
    shell:
        "python -m gwlora.plot --curves {input.curves:q} --runs {input.runs:q} --out {params.out_dir:q} --log {log:q}"
