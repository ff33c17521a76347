rule deck:
    """The slide deck, filled from the results: Quarto revealjs, or the offline pandoc fallback."""
    input:
        tables=rules.aggregate.output,
        figures=rules.plot.output,
        model=rules.base_model.output,
        data=expand(rules.dataset.output, split=SPLITS),
        source=[f"{REPORT}/{name}" for name in ("slides.qmd", "_quarto.yml", "references.bib", "fallback-template.html")],
    output:
        html=f"{RESULTS}/slides/index.html",
        source=f"{RESULTS}/slides/slides.qmd",
        record=f"{RESULTS}/slides/deck.json",
    params:
        config=as_json(config),
        source=parent_of("source"),
        tables=parent_of("tables"),
        figures=parent_of("figures"),
        out_dir=subpath(output.html, parent=True),
    localrule: True  # renders on the machine running Snakemake (where Quarto is), not worth a queue slot
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/deck.log",
    benchmark:
        f"{RESULTS}/benchmarks/deck.tsv"
    shell:
        "python -m gwlora.deck --source {params.source:q} --tables {params.tables:q} --figures {params.figures:q}"
        " --model {input.model:q} --data {input.data:q} --config {params.config:q}"
        " --out {params.out_dir:q} --log {log:q}"
