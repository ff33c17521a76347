"""Stage `deck`: the slide deck, filled entirely from the workflow's results.

``report/slides.qmd`` is a Quarto document written as a Jinja2 template; this
stage fills it with the tables and records the other rules wrote and with the
findings the aggregate stage computed (``tables/findings.json``, see
:mod:`gwlora.findings`: the template prints them, it judges nothing), gives every
figure the plot stage drew a slide (captioned by its ``workflow/report/<name>.rst``),
draws the workflow slide from the rule files (:mod:`gwlora.rulegraph`), copies
the figures beside it, and renders:

* with ``quarto`` on PATH: Quarto's revealjs format, self-contained;
* without it: pandoc (from ``pypandoc-binary``) renders the same filled source
  to a self-contained HTML slide deck (dzslides), offline, so the workflow
  completes anywhere. The log and ``deck.json`` say which renderer ran.

Either way the same source also becomes ``slides.pptx`` (Quarto's or pandoc's
PowerPoint writer), and ``slides.pdf`` is printed from the HTML deck by headless
Chromium when one is installed (``gwlora.browser``).

Code on the implementation slides is read from the package's own source,
between ``# deck: NAME`` and ``# deck: end`` comments, so it cannot drift from
the code that ran.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
import shutil
import subprocess
import textwrap
from pathlib import Path

import jinja2
import pandas as pd
import yaml

from . import browser, constants, pptx_deck, rulegraph
from .aggregate import CALIBRATION_METRICS, COST_METRICS, QUALITY_METRICS, display_table
from .cli import StageError, atomic_dir, json_arg, read_json, run_stage, write_json
from .findings import BASELINES, FINDINGS_FILE, IN_DISTRIBUTION, METHOD_FAMILIES, num, overrides
from .markdown import Markdown, code_block, code_span, escape, plain_path
from .plot import FIGURES, figure_names

log = logging.getLogger("gwlora.deck")

def template_outline(source: Path) -> list[str]:
    """The deck's sections: the level-1 headings of the template (outside code), in order."""
    sections, fence = [], None
    for line in source.read_text().splitlines():
        if m := re.match(r"^(`{3,}|~{3,})", line):
            fence = None if fence and m.group(1).startswith(fence) else fence or m.group(1)
        elif fence is None and (m := re.match(r"^# (.+?)(\s+\{[^}]*\})?\s*$", line)):
            sections.append(m.group(1))
    return sections


PACKAGE = Path(__file__).resolve().parent
# The implementation slides' code: (module file, excerpt name) -> shown on the slide named in slides.qmd
CODE_EXCERPTS = {
    "clip_context": ("model.py", "clip-context"),
    "forward": ("model.py", "forward"),
    "lora_config": ("families/lora.py", "lora-config"),
    "train_step": ("train.py", "train-step"),
}


def code_excerpt(path: Path, name: str) -> dict:
    """The lines of `path` between ``# deck: NAME`` and the next ``# deck: end``, dedented, with their line numbers."""
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"# deck: {name}"), None)
    if start is None:
        raise StageError(f"{path}: no `# deck: {name}` excerpt marker")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() == "# deck: end"), None)
    if end is None:
        raise StageError(f"{path}: excerpt `{name}` has no `# deck: end`")
    text = textwrap.dedent("\n".join(lines[start + 1 : end]))
    return {"text": text, "path": f"src/gwlora/{path.relative_to(PACKAGE).as_posix()}", "first": start + 2, "last": end}


# Columns of the comparison slide: quality with its paired interval (Δ vs full), then cost
METHOD_METRICS = ("test_auc", "step_time_ms", "checkpoint_mb")


# The most rows of a table on one slide: a longer table continues on the next slides, "(1 of 2)", each part with its
# heading row (a 16:9 slide holds about ten rows of one line under a title and a sentence, in the HTML and the PPTX).
TABLE_ROWS_PER_SLIDE = 10


def table_parts(rows: list | pd.DataFrame, per_slide: int = TABLE_ROWS_PER_SLIDE) -> list:
    """`rows` in as few consecutive parts of at most `per_slide` rows as fit, the parts as even as they can be."""
    n = len(rows)
    parts = max(1, -(-n // per_slide))
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [rows[a:b] for a, b in zip(bounds, bounds[1:])]


def methods_table(summary: pd.DataFrame) -> list[Markdown]:
    """LoRA against the other adaptation methods, with the full and frozen baselines (the slide shows it when a method
    besides LoRA ran), as slide-sized parts."""
    rows = summary[summary.family.isin((*BASELINES, *METHOD_FAMILIES))]
    table = display_table(rows, METHOD_METRICS).drop(columns=["seeds", "% of full"])  # narrow enough for one slide
    return _markdown_parts(table)


def _markdown(table: pd.DataFrame) -> Markdown:
    """A display table as a Markdown pipe table, every heading and cell escaped to literal text."""
    table = table.rename(columns=escape).map(escape)
    return Markdown(table.to_markdown(index=False, colalign=["left"] + ["right"] * (table.shape[1] - 1), disable_numparse=True))


# The most characters a table row may need on one slide: the sum over its columns of each one's longest cell (a heading
# wraps at its spaces, so its longest word), plus 2 for the cell's margins. 120 sits at about 9 pt across a 16:9 PPTX
# slide (9 inches at 0.55 of a point per character, the width of digits) and fits the HTML deck's tables; a wider table
# continues on the next slides by columns, each part led by its first column (the variant).
TABLE_CHARS_PER_SLIDE = 120


def column_chars(table: pd.DataFrame) -> list[int]:
    """What each column of a display table needs, in characters: its longest cell or heading word
    (:func:`gwlora.pptx_deck.cell_chars`), plus 2 for margins."""
    return [pptx_deck.cell_chars(c, table[c]) + 2 for c in table.columns]


def _packed(widths: list[int], cap: int) -> list[list[int]]:
    """The indices of `widths` in consecutive groups, each filled up to `cap` before the next starts."""
    groups, used = [[]], 0
    for i, width in enumerate(widths):
        if groups[-1] and used + width > cap:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += width
    return groups


def column_groups(table: pd.DataFrame, budget: int = TABLE_CHARS_PER_SLIDE) -> list[list[str]]:
    """The columns of `table` after its first in as few consecutive groups as fit `budget` beside the first
    (:func:`column_chars`), the widest group as narrow as that number of groups allows; one group when the table fits."""
    first, *rest = column_chars(table)
    columns = list(table.columns[1:])
    room = max(budget - first, max(rest, default=1))
    fewest = len(_packed(rest, room))
    cap = next(c for c in range(max(max(rest, default=1), -(-sum(rest) // fewest)), room + 1) if len(_packed(rest, c)) <= fewest)
    return [[columns[i] for i in group] for group in _packed(rest, cap)]


def _markdown_parts(table: pd.DataFrame) -> list[Markdown]:
    """A display table as slide-sized Markdown pipe tables: parts of rows (:func:`table_parts`), each, when the table is
    wider than a slide, in parts of columns (:func:`column_groups`, the same columns in each row part)."""
    groups = column_groups(table)
    return [_markdown(rows[[table.columns[0], *group]]) for rows in table_parts(table) for group in groups]


def summary_tables(summary: pd.DataFrame) -> dict[str, list[Markdown]]:
    """The results slides' tables (quality, detection and calibration, costs), each as slide-sized parts."""
    shapes = {"quality": (QUALITY_METRICS, True, False), "calibration": (CALIBRATION_METRICS, False, True),
              "cost": (COST_METRICS, False, False)}
    tables = {name: display_table(summary, metrics, parameters=parameters, learned=learned) for name, (metrics, parameters, learned) in shapes.items()}
    # the main results beside the runs that did not learn, so that no quality there passes for learning ("1 of 3", "none")
    tables["quality"].insert(1, "did not learn", tables["calibration"]["did not learn"])
    return {name: _markdown_parts(table) for name, table in tables.items()}


def shift_table(shift: pd.DataFrame) -> list[Markdown]:
    """Every variant on every test set: AUC (95% interval) / Brier score, and the paired verdict against full fine-tuning."""
    table = {"variant": list(dict.fromkeys(shift.variant))}
    for name, rows in shift.groupby("test_set", sort=False):
        rows = rows.set_index("variant")
        heading = "in distribution" if name == IN_DISTRIBUTION else name
        table[heading] = [
            f"{num(rows.auc.get(v), 3)} ({num(rows.auc_ci_low.get(v), 3)}–{num(rows.auc_ci_high.get(v), 3)}) / {num(rows.brier.get(v), 3)}"
            for v in table["variant"]
        ]
        if name != IN_DISTRIBUTION and rows.verdict_vs_full.notna().any():
            table[f"{heading} vs full"] = [rows.verdict_vs_full.get(v) if isinstance(rows.verdict_vs_full.get(v), str) else "n/a"
                                            for v in table["variant"]]
    return _markdown_parts(pd.DataFrame(table))


# The most lines of code or YAML on one slide: a longer block continues on the next slides (24 lines fit a 16:9 slide's
# body at 8.5 pt in the PPTX, above its 7 pt floor, and the HTML deck's code size)
CODE_LINES_PER_SLIDE = 24


def _depth(line: str) -> int:
    """A YAML line's nesting: its indentation, one more for a list item (PyYAML writes a list at its key's indentation)."""
    stripped = line.lstrip(" ")
    return len(line) - len(stripped) + (1 if stripped.startswith("- ") else 0)


def _ancestors(lines: list[str], i: int) -> list[str]:
    """The lines of the keys that `lines[i]` sits under, outermost first, each marked as continued."""
    out, depth = [], _depth(lines[i])
    for line in reversed(lines[:i]):
        if depth == 0:
            break
        if line.strip() and _depth(line) < depth:
            out.insert(0, f"{line}  # continued")
            depth = _depth(line)
    return out


def yaml_parts(text: str, per_slide: int = CODE_LINES_PER_SLIDE) -> list[str]:
    """YAML `text` in parts of at most `per_slide` lines, each broken before its least nested line in the latter half of
    the part, a continued part headed by the keys it sits under (so that each part reads as YAML of its own)."""
    lines, parts, start = text.splitlines(), [], 0
    while start < len(lines):
        header = _ancestors(lines, start) if parts else []
        room = max(2, per_slide - len(header))
        end = min(len(lines), start + room)
        if end < len(lines):
            end = min(range(start + max(1, room // 2), end + 1), key=lambda i: (_depth(lines[i]), -i))
        parts.append("\n".join(header + lines[start:end]))
        start = end
    return parts


def config_sections(config: dict) -> dict[str, list[str]]:
    """The appendix's configuration, as YAML in slide-sized parts (:func:`yaml_parts`): the shifted test sets as the
    overrides they are, not as the whole data sections validation made of them."""
    test_sets = {name: overrides(config["data"], data) for name, data in config["evaluation"]["test_sets"].items()}
    sections = {
        "data": {"experiment": config["experiment"], "seed": config["seed"], "data": config["data"]}
        | ({"evaluation": {"test_sets": test_sets}} if test_sets else {}),
        "model and training": {k: config[k] for k in config if k not in ("experiment", "seed", "data", "evaluation")},
    }
    return {name: yaml_parts(yaml.safe_dump(part, sort_keys=False, default_flow_style=None, width=70).rstrip())
            for name, part in sections.items()}


def deck_context(tables_dir: Path, figures_dir: Path, config: dict, renderer: str, snakefile: Path) -> dict:
    """Everything the template prints: the aggregate stage's tables, study.json and findings.json, the plot stage's
    figures (with their captions) and the workflow's rules."""
    summary = pd.read_csv(tables_dir / "summary.csv")
    runs = pd.read_csv(tables_dir / "runs.csv")
    if summary.empty:
        raise StageError(f"{tables_dir / 'summary.csv'} has no variants")
    study = read_json(tables_dir / "study.json")
    found = read_json(tables_dir / FINDINGS_FILE)
    shift = pd.read_csv(tables_dir / "shift.csv")
    environment = study["environment"]
    return {
        **found,
        "experiment": config["experiment"],
        "config": config,
        "constants": constants.as_dict(),
        "audio": config["data"]["source"] in constants.AUDIO_SOURCES,
        "config_yaml": config_sections(config),
        "model": study["base_model"],
        "demo_model": bool(study["base_model"]["random_init"]),
        "data": study["data"],
        "tables": summary_tables(summary),
        "methods_md": methods_table(summary) if found["methods_compared"] else [],
        "shift_md": shift_table(shift) if found["shift"] else [],
        "workflow_diagram": rulegraph.diagram(rulegraph.stages_run(rulegraph.rule_graph(snakefile), config)),
        "code": {key: code_excerpt(PACKAGE / module, name) for key, (module, name) in CODE_EXCERPTS.items()},
        "hardware": environment["hardware"],
        "git_commit": ", ".join(environment["git_commits"]),
        "devices": sorted(runs.device.unique().tolist()),
        "precision": sorted(runs.precision.unique().tolist()),
        "versions": environment["versions"],
        "renderer": renderer,
        "figures": figure_slides(figures_dir, config, snakefile.parent / CAPTIONS),
    }


CAPTIONS = "workflow/report"  # each figure's caption, <name>.rst, beside the Snakefile: the report's and the slide's
INTRODUCTION_FIGURES = ("example_inputs",)  # shown in the introduction; every other figure in the results


def caption(path: Path, config: dict) -> Markdown:
    """A figure's caption as one paragraph of Markdown: the reStructuredText Snakemake's report shows, filled as the
    report fills it (a Jinja2 template of ``snakemake.config``), converted by pandoc."""
    import pypandoc

    if not path.is_file():
        raise StageError(f"{path}: no caption for figure {path.stem!r}")
    try:
        text = jinja2.Template(path.read_text(), undefined=jinja2.StrictUndefined).render(snakemake={"config": config})
    except jinja2.UndefinedError as exc:
        raise StageError(f"{path}: the caption uses a value the config does not provide: {exc}") from exc
    return Markdown(" ".join(pypandoc.convert_text(text, "markdown", format="rst", extra_args=["--wrap=none"]).split()))


def figure_slides(figures_dir: Path, config: dict, captions: Path) -> dict[str, list[dict]]:
    """Every figure the plot stage draws for `config` (:func:`gwlora.plot.figure_names`), as slides (name, title,
    caption from `captions`/<name>.rst, path beside the deck), by the deck section that shows it."""
    names = figure_names(config)
    missing = [name for name in names if not (figures_dir / f"{name}.png").is_file()]
    if missing:
        raise StageError(f"{figures_dir}: no {', '.join(f'{m}.png' for m in missing)}; run the plot stage first")
    slides = [{"name": name, "title": FIGURES[name].title, "caption": caption(captions / f"{name}.rst", config),
               "path": plain_path(f"figures/{name}.png")} for name in names]
    return {"introduction": [s for s in slides if s["name"] in INTRODUCTION_FIGURES],
            "results": [s for s in slides if s["name"] not in INTRODUCTION_FIGURES]}


def fill_template(source: Path, context: dict, renderer: str) -> str:
    """The template filled from `context`: every printed value is escaped to literal text (:mod:`gwlora.markdown`)."""
    quarto = renderer == "quarto"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(source.parent)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        # `{#` starts pandoc attributes such as `{#refs}`; comments use `{##`.
        comment_start_string="{##",
        comment_end_string="##}",
        finalize=escape,  # values from config and data are text, never markup
    )
    env.filters["code"] = lambda value: code_span(value, quarto)
    env.filters["codeblock"] = lambda value, language="": code_block(value, language, quarto)
    env.filters["parts"] = table_parts  # a list of table rows as slide-sized parts
    try:
        return env.get_template(source.name).render(**context)
    except jinja2.UndefinedError as exc:
        raise StageError(f"{source}: the template uses a value the results do not provide: {exc}") from exc


def quarto_available() -> str | None:
    return shutil.which("quarto")


def _run_renderer(cmd: list[str], build: Path, name: str) -> None:
    done = subprocess.run(cmd, cwd=build, capture_output=True, text=True)
    log.info("%s: %s", " ".join(cmd[:4]), done.stderr.strip()[-2000:])
    if done.returncode:
        raise StageError(f"{name} failed to render the deck (exit {done.returncode}): {done.stderr.strip()[-500:]}")


# PowerPoint text sizes relative to pandoc's reference deck (body 24 pt): the slides carry as much text as the
# HTML deck's, which fits only at about 14 pt on a 16:9 slide.
PPTX_TEXT_SCALE = 0.6
PPTX_REFERENCE = "pptx-reference.pptx"


def pptx_reference(out: Path) -> Path:
    """Pandoc's reference PowerPoint deck with every body text size scaled by :data:`PPTX_TEXT_SCALE` (titles kept)."""

    blob = subprocess.run([pandoc_path(), "--print-default-data-file", "reference.pptx"], capture_output=True, check=True).stdout
    scale = lambda m: f'sz="{max(900, round(int(m.group(1)) * PPTX_TEXT_SCALE / 50) * 50)}"'  # noqa: E731 - hundredths of a point
    with zipfile.ZipFile(io.BytesIO(blob)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.startswith(("ppt/slideMasters/", "ppt/slideLayouts/")) and item.filename.endswith(".xml"):
                text = data.decode()
                head, sep, rest = text.partition("<p:bodyStyle>") if "slideMasters" in item.filename else ("", "", text)
                data = (head + sep + re.sub(r'sz="(\d+)"', scale, rest)).encode()
                if '<p:cSld name="Section Header">' in text:
                    data = section_header_layout(data.decode()).encode()
            dst.writestr(item, data)
    return out


def section_header_layout(layout: str) -> str:
    """Pandoc's "Section Header" layout with its title as a section slide shows it: large, centred across the
    middle of the slide (pandoc's sits as small capitals at the bottom left)."""
    title = re.search(r'<p:sp>(?:(?!</p:sp>).)*?<p:ph type="title"/>.*?</p:sp>', layout, re.S)
    if title is None:
        raise StageError("pandoc's reference.pptx: its Section Header layout has no title placeholder")
    centred = re.sub(r"<a:xfrm>.*?</a:xfrm>", '<a:xfrm><a:off x="457200" y="1714500"/><a:ext cx="8229600" cy="1714500"/></a:xfrm>',
                     title.group(0), count=1, flags=re.S)
    centred = re.sub(r'<a:bodyPr[^>]*/>', '<a:bodyPr anchor="ctr"/>', centred, count=1)
    centred = re.sub(r'<a:lvl1pPr[^>]*>\s*<a:defRPr[^>]*/>', '<a:lvl1pPr algn="ctr"><a:defRPr sz="4000" b="1"/>', centred, count=1)
    return layout[: title.start()] + centred + layout[title.end():]


def render_quarto(build: Path) -> tuple[Path, Path]:
    """Quarto's revealjs deck (self-contained, see report/_quarto.yml) and its PowerPoint deck."""
    _run_renderer(["quarto", "render", "slides.qmd", "--to", "revealjs"], build, "quarto")
    pptx_reference(build / PPTX_REFERENCE)
    _run_renderer(["quarto", "render", "slides.qmd", "--to", "pptx", "-M", f"reference-doc:{PPTX_REFERENCE}"], build, "quarto")
    log.info("slides.pptx for PowerPoint and LibreOffice: %s", pptx_deck.fix_pptx(build / "slides.pptx"))
    return build / "slides.html", build / "slides.pptx"


def pandoc_path() -> str:
    import pypandoc

    return pypandoc.get_pandoc_path()


def render_pandoc(build: Path) -> tuple[Path, Path]:
    """The filled source as one self-contained HTML slide deck and a PowerPoint deck, offline."""
    common = ["slides.qmd", "--from=markdown", "--standalone", "--slide-level=2", "--citeproc"]
    _run_renderer([pandoc_path(), *common, "--to=dzslides", "--output=slides.html", "--embed-resources", "--mathml",
                   "--template=fallback-template.html"], build, "pandoc")
    pptx_reference(build / PPTX_REFERENCE)
    _run_renderer([pandoc_path(), *common, "--to=pptx", "--output=slides.pptx", f"--reference-doc={PPTX_REFERENCE}"], build, "pandoc")
    log.info("slides.pptx for PowerPoint and LibreOffice: %s", pptx_deck.fix_pptx(build / "slides.pptx"))
    return build / "slides.html", build / "slides.pptx"


def build_deck(
    *, tables_dir, figures_dir, config: dict, out_dir, source_dir, snakefile, renderer: str = "auto", pdf: bool = False
) -> dict:
    """Fill the template, render HTML and PPTX (and a PDF when `pdf`) into `out_dir`; `snakefile` is the workflow's
    (its rule files draw the workflow slide, its workflow/report/ captions the figures)."""
    tables_dir, figures_dir, source_dir, snakefile = map(Path, (tables_dir, figures_dir, source_dir, snakefile))
    if renderer == "auto":
        renderer = "quarto" if quarto_available() else "pandoc"
    if renderer == "quarto" and not quarto_available():
        raise StageError("renderer quarto requested but `quarto` is not on PATH")
    if pdf and browser.find_chromium() is None:
        raise StageError(
            "deck.pdf is true but no Chromium is on PATH to print slides.pdf: install one "
            "(Debian: apt-get install chromium) or set deck.pdf: false"
        )
    context = deck_context(tables_dir, figures_dir, config, renderer, snakefile)
    text = fill_template(source_dir / "slides.qmd", context, renderer)
    with atomic_dir(out_dir) as tmp:
        build = tmp / "build"
        shutil.copytree(source_dir, build, ignore=shutil.ignore_patterns("slides.qmd", "_site", ".quarto"))
        (build / "slides.qmd").write_text(text)
        (build / "figures").mkdir()
        figures = {f["name"]: f["path"] for slides in context["figures"].values() for f in slides}
        for path in figures.values():
            shutil.copy2(figures_dir / Path(path).name, build / path)
        log.info("rendering the deck with %s", renderer)
        html, pptx = render_quarto(build) if renderer == "quarto" else render_pandoc(build)
        shutil.copy2(html, tmp / "index.html")
        shutil.copy2(pptx, tmp / "slides.pptx")
        shutil.copy2(build / "slides.qmd", tmp / "slides.qmd")
        shutil.rmtree(build)
        outputs = ["index.html", "slides.pptx", "slides.qmd"]
        if pdf:
            log.info("printing the deck to PDF with headless Chromium")
            browser.print_pdf(tmp / "index.html", tmp / "slides.pdf")
            outputs.append("slides.pdf")
        record = {"renderer": renderer, "outputs": outputs, "sections": template_outline(source_dir / "slides.qmd"), "figures": figures}
        write_json(tmp / "deck.json", record)
    return record


def _parser(p):
    p.add_argument("--source", required=True, help="deck source directory (report/: slides.qmd template, bibliography)")
    p.add_argument("--tables", required=True, help="tables directory of the aggregate stage")
    p.add_argument("--figures", required=True, help="figures directory of the plot stage")
    p.add_argument("--config", type=json_arg, required=True, help="the validated workflow config, as JSON")
    p.add_argument("--snakefile", required=True, help="the workflow's Snakefile (its rule files draw the workflow slide; workflow/report/ beside it holds the figure captions)")
    p.add_argument("--renderer", choices=["auto", "quarto", "pandoc"], default="auto", help="quarto, the offline pandoc fallback, or auto (quarto when on PATH)")
    p.add_argument("--pdf", action="store_true", help="also print slides.pdf with headless Chromium (config deck.pdf)")
    p.add_argument("--out", required=True, help="output directory of the deck")


def _run(args):
    """Fill the slide template from the results and render the deck."""
    record = build_deck(
        tables_dir=args.tables, figures_dir=args.figures,
        config=args.config, out_dir=args.out, source_dir=args.source, snakefile=args.snakefile, renderer=args.renderer,
        pdf=args.pdf,
    )
    log.info("wrote %s in %s (renderer: %s)", ", ".join(record["outputs"]), args.out, record["renderer"])


def main(argv=None) -> int:
    return run_stage("deck", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
