rule plot:
    """The presentation's two figures: validation AUC and loss against training time."""
    input:
        curves=rules.aggregate.output.curves,
    output:
        expand(f"{RESULTS}/figures/{{name}}.{{fmt}}", name=["val_auc_vs_time", "val_loss_vs_time"], fmt=["png", "svg"]),
    params:
        out_dir=subpath(output[0], parent=True),
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/plot.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot.tsv"
    shell:
        "python -m gwlora.plot --curves {input.curves:q} --out {params.out_dir:q} --log {log:q}"
