"""Stage `deck`: the slide deck, filled entirely from the workflow's results.

``report/slides.qmd`` is a Quarto document written as a Jinja2 template; this
stage fills it with numbers read from the tables and records the other rules
wrote (no number is typed by hand), copies the figures beside it, and renders:

* with ``quarto`` on PATH: Quarto's revealjs format, self-contained;
* without it: pandoc (from ``pypandoc-binary``) renders the same filled source
  to a self-contained HTML slide deck (dzslides), offline, so the workflow
  completes anywhere. The log and ``deck.json`` say which renderer ran.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import jinja2
import pandas as pd
import yaml

from .aggregate import COST_METRICS, QUALITY_METRICS, format_parameters, markdown_table
from .cli import StageError, atomic_dir, json_arg, read_json, run_stage, write_json

log = logging.getLogger("gwlora.deck")

OUTLINE = (
    "Introduction",
    "Background",
    "Fine-Tuning and Parameter-Efficient Adaptation",
    "LoRA",
    "Experiments and Results",
    "Conclusion",
    "References",
    "Appendix",
)


def _num(value, decimals: int = 4) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.{decimals}f}"


def analysis(summary: pd.DataFrame) -> dict:
    """Findings stated on the slides, each computed from the summary table."""
    by_family = {f: summary[summary.family == f] for f in summary.family.unique()}
    best = summary.loc[summary.best_val_auc.idxmax()]
    out = {"best_variant": best.variant, "best_val_auc": _num(best.best_val_auc)}
    full = by_family.get("full")
    lora = by_family.get("lora")
    if full is not None and len(full):
        full = full.iloc[0]
        out["full"] = {"auc": _num(full.best_val_auc), "loss": _num(full.best_val_loss), "time": _num(full.train_time_s, 1), "params": format_parameters(full.trainable_parameters)}
    frozen = by_family.get("frozen")
    if frozen is not None and len(frozen):
        frozen = frozen.iloc[0]
        out["frozen"] = {"auc": _num(frozen.best_val_auc), "loss": _num(frozen.best_val_loss), "params": format_parameters(frozen.trainable_parameters)}
    if lora is not None and len(lora):
        top = lora.loc[lora.best_val_auc.idxmax()]
        entry = {
            "variant": top.variant,
            "rank": int(top["rank"]),
            "auc": _num(top.best_val_auc),
            "loss": _num(top.best_val_loss),
            "params": format_parameters(top.trainable_parameters),
            "time": _num(top.train_time_s, 1),
            "step_ms": _num(top.step_time_ms, 1),
        }
        if isinstance(out.get("full"), dict):
            entry["params_pct_of_full"] = _num(top.trainable_vs_full_percent, 2)
            entry["auc_gap_to_full"] = _num(top.best_val_auc - full.best_val_auc)
            entry["step_time_ratio"] = _num(top.step_time_ms / full.step_time_ms, 2)
        out["lora"] = entry
    return out


def deck_context(tables_dir: Path, figures_dir: Path, model_dir: Path, data_dirs: list[Path], config: dict, renderer: str) -> dict:
    summary = pd.read_csv(tables_dir / "summary.csv")
    runs = pd.read_csv(tables_dir / "runs.csv")
    if summary.empty:
        raise StageError(f"{tables_dir / 'summary.csv'} has no variants")
    base = read_json(model_dir / "base_model.json")
    data = {d["split"]: d for d in (read_json(Path(p) / "build.json") for p in data_dirs)}
    first_run = read_json(Path(runs.run_dir.iloc[0]) / "summary.json")
    return {
        "experiment": config["experiment"],
        "config": config,
        "config_yaml": yaml.safe_dump(config, sort_keys=False).rstrip(),
        "model": base,
        "demo_model": bool(base["random_init"]),
        "data": data,
        "variants": summary.to_dict(orient="records"),
        "table_quality_md": markdown_table(summary, QUALITY_METRICS).rstrip(),
        "table_cost_md": markdown_table(summary, COST_METRICS, parameters=False).rstrip(),
        "analysis": analysis(summary),
        "n_runs": len(runs),
        "seeds": sorted(runs.seed.unique().tolist()),
        "devices": sorted(runs.device.unique().tolist()),
        "precision": sorted(runs.precision.unique().tolist()),
        "versions": first_run["versions"],
        "renderer": renderer,
        "figures": {p.stem: f"figures/{p.name}" for p in sorted(figures_dir.glob("*.png"))},
    }


def fill_template(source: Path, context: dict) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(source.parent)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        # `{#` starts pandoc attributes such as `{#refs}`; comments use `{##`.
        comment_start_string="{##",
        comment_end_string="##}",
    )
    env.filters["num"] = _num
    env.filters["params"] = format_parameters
    try:
        return env.get_template(source.name).render(**context)
    except jinja2.UndefinedError as exc:
        raise StageError(f"{source}: the template uses a value the results do not provide: {exc}") from exc


def quarto_available() -> str | None:
    return shutil.which("quarto")


def render_quarto(build: Path) -> Path:
    done = subprocess.run(["quarto", "render", "slides.qmd", "--to", "revealjs"], cwd=build, capture_output=True, text=True)
    log.info("quarto: %s", done.stderr.strip())
    if done.returncode:
        raise StageError(f"quarto failed to render the deck (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return build / "slides.html"


def pandoc_path() -> str:
    import pypandoc

    return pypandoc.get_pandoc_path()


def render_pandoc(build: Path) -> Path:
    """Render the filled source to one self-contained HTML slide deck, offline."""
    cmd = [
        pandoc_path(), "slides.qmd", "--from=markdown", "--to=dzslides", "--output=slides.html",
        "--standalone", "--embed-resources", "--slide-level=2", "--mathml", "--citeproc", "--template=fallback-template.html",
    ]
    done = subprocess.run(cmd, cwd=build, capture_output=True, text=True)
    if done.returncode:
        raise StageError(f"pandoc failed to render the deck (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return build / "slides.html"


def build_deck(
    *, tables_dir, figures_dir, model_dir, data_dirs, config: dict, out_dir, source_dir, renderer: str = "auto"
) -> dict:
    tables_dir, figures_dir, model_dir, source_dir = map(Path, (tables_dir, figures_dir, model_dir, source_dir))
    if renderer == "auto":
        renderer = "quarto" if quarto_available() else "pandoc"
    if renderer == "quarto" and not quarto_available():
        raise StageError("renderer quarto requested but `quarto` is not on PATH")
    context = deck_context(tables_dir, figures_dir, model_dir, [Path(d) for d in data_dirs], config, renderer)
    text = fill_template(source_dir / "slides.qmd", context)
    with atomic_dir(out_dir) as tmp:
        build = tmp / "build"
        shutil.copytree(source_dir, build, ignore=shutil.ignore_patterns("slides.qmd", "_site", ".quarto"))
        (build / "slides.qmd").write_text(text)
        shutil.copytree(figures_dir, build / "figures")
        log.info("rendering the deck with %s", renderer)
        html = render_quarto(build) if renderer == "quarto" else render_pandoc(build)
        shutil.copy2(html, tmp / "index.html")
        shutil.copy2(build / "slides.qmd", tmp / "slides.qmd")
        shutil.rmtree(build)
        record = {"renderer": renderer, "sections": list(OUTLINE), "figures": context["figures"]}
        write_json(tmp / "deck.json", record)
    return record


def _parser(p):
    p.add_argument("--source", required=True, help="deck source directory (report/: slides.qmd template, bibliography)")
    p.add_argument("--tables", required=True, help="tables directory of the aggregate stage")
    p.add_argument("--figures", required=True, help="figures directory of the plot stage")
    p.add_argument("--model", required=True, help="base model directory (its base_model.json)")
    p.add_argument("--data", nargs="+", required=True, help="dataset split directories (their build.json)")
    p.add_argument("--config", type=json_arg, required=True, help="the validated workflow config, as JSON")
    p.add_argument("--renderer", choices=["auto", "quarto", "pandoc"], default="auto")
    p.add_argument("--out", required=True, help="output directory of the deck")


def _run(args):
    """Fill the slide template from the results and render the deck."""
    record = build_deck(
        tables_dir=args.tables, figures_dir=args.figures, model_dir=args.model, data_dirs=args.data,
        config=args.config, out_dir=args.out, source_dir=args.source, renderer=args.renderer,
    )
    log.info("wrote %s/index.html (renderer: %s)", args.out, record["renderer"])


def main(argv=None) -> int:
    return run_stage("deck", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
