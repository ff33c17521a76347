rule plot:
    """The presentation's figures: exactly those gwlora.plot.figure_names lists for this config (declared below and passed as --figures)."""
    input:
        curves=rules.aggregate.output.curves,
        runs=rules.aggregate.output.runs,
        auc_by_snr=rules.aggregate.output.auc_by_snr,
        summary=rules.aggregate.output.summary_csv,
        shift_runs=rules.aggregate.output.shift_runs,
        shift=rules.aggregate.output.shift,
        efficiency=rules.aggregate.output.efficiency,
        context=rules.aggregate.output.context,
        examples=expand(rules.features.output, split="test"),
    output:
        # the PNGs go into `snakemake --report`, each under its caption; the SVGs are for papers
        [
            report(f"{RESULTS}/figures/{name}.png", caption=f"../report/{name}.rst", category="Figures", labels={"figure": name})
            for name in figure_names()
        ],
        expand(f"{RESULTS}/figures/{{name}}.svg", name=figure_names()),
    params:
        figures=figure_names(),
        out_dir=subpath(output[0], parent=True),
        lr_selection=config["train"]["lr_selection"],
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/plot.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot.tsv"
    shell:
        "python -m gwlora.plot --figures {params.figures} --curves {input.curves:q} --runs {input.runs:q} --auc-by-snr {input.auc_by_snr:q} --summary {input.summary:q}"
        " --shift-runs {input.shift_runs:q} --shift {input.shift:q} --efficiency {input.efficiency:q} --context {input.context:q} --examples {input.examples:q}"
        " --lr-selection {params.lr_selection} --out {params.out_dir:q} --log {log:q}"
