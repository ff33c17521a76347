# the workflow slide is drawn from the Snakefile's rule files; each figure slide's caption is its report caption
RULES = f"{workflow.basedir}/workflow/rules"
CAPTIONS = f"{workflow.basedir}/workflow/report"
# slides.pdf when the config asks for it (deck.pdf), whatever the machine: the deck stage then needs Chromium
PDF_DECK = config["deck"]["pdf"]
DECK_OUTPUTS = {
    "html": report(f"{RESULTS}/slides/index.html", caption="../report/deck.rst", category="Slides", labels={"deck": "HTML"}),
    "pptx": f"{RESULTS}/slides/slides.pptx",
    "source": f"{RESULTS}/slides/slides.qmd",
    "record": f"{RESULTS}/slides/deck.json",
} | ({"pdf": f"{RESULTS}/slides/slides.pdf"} if PDF_DECK else {})


rule deck:
    """The slide deck, filled from the results: Quarto revealjs (or the offline pandoc fallback), PPTX, and a PDF."""
    input:
        tables=rules.aggregate.output,
        figures=rules.plot.output,
        source=[f"{REPORT}/{name}" for name in ("slides.qmd", "_quarto.yml", "deck.css", "references.bib", "slides.csl", "fallback-template.html")],
        code=[f"{SRC}/gwlora/{name}" for name in ("model.py", "train.py")],  # the implementation slides quote them
        snakefile=f"{workflow.basedir}/Snakefile",
        rules=[f"{RULES}/{name}" for name in sorted(os.listdir(RULES))],
        captions=[f"{CAPTIONS}/{name}.rst" for name in figure_names()],
    output:
        **DECK_OUTPUTS,
    params:
        config=as_json(config),
        source=parent_of("source"),
        tables=parent_of("tables"),
        figures=parent_of("figures"),
        out_dir=lambda wildcards, output: str(Path(output.html).parent),
        pdf="--pdf" if PDF_DECK else "",
        snakefile=lambda wildcards, input: input.snakefile,
    localrule: True  # renders on the machine running Snakemake (where Quarto is), not worth a queue slot
    conda:
        "../../environment.yml"
    log:
        f"{RESULTS}/logs/deck.log",
    benchmark:
        f"{RESULTS}/benchmarks/deck.tsv"
    shell:
        "python -m gwlora.deck --source {params.source:q} --tables {params.tables:q} --figures {params.figures:q}"
        " --config {params.config:q} --snakefile {params.snakefile:q} {params.pdf}"
        " --out {params.out_dir:q} --log {log:q}"
