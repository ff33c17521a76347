"""Stage `deck`: the slide deck, filled entirely from the workflow's results.

``report/slides.qmd`` is a Quarto document written as a Jinja2 template; this
stage fills it with numbers read from the tables and records the other rules
wrote (no number is typed by hand), copies the figures beside it, and renders:

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

from . import browser, constants
from .aggregate import CALIBRATION_METRICS, COST_METRICS, IN_DISTRIBUTION, QUALITY_METRICS, display_table, format_parameters, markdown_table
from .cli import StageError, atomic_dir, json_arg, read_json, run_stage, write_json
from .config import ENCODER_LINEAR_MODULES
from .markdown import Markdown, code_block, code_span, escape, plain_path
from .compare import describe, pooled_differences
from .plot import figure_names

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
    "lora_config": ("model.py", "lora-config"),
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
    return {"text": text, "path": f"src/gwlora/{path.name}", "first": start + 2, "last": end}


def lora_budget(variant: dict, base: dict, ffn: int) -> dict:
    """Trainable adapter parameters of a LoRA variant by the paper's count, r(d + k) per adapted d x k matrix."""
    d = base["d_model"]
    shapes = {name: (d, d) for name in ENCODER_LINEAR_MODULES[:4]} | {"fc1": (d, ffn), "fc2": (ffn, d)}
    r = int(variant["rank"])
    per_layer = sum(r * sum(shapes[m]) + (shapes[m][1] if variant["dora"] else 0) for m in variant["target_modules"])
    full = sum(shapes[m][0] * shapes[m][1] for m in variant["target_modules"])
    return {"per_layer": per_layer, "total": per_layer * base["encoder_layers"], "dense_per_layer": full}


def _num(value, decimals: int = 4) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.{decimals}f}"


# Timings are single measurements on a shared machine: ratios closer to 1 than this are not told apart.
TIMING_NOISE = 0.10


def comparison(diffs: pd.DataFrame, variant: str, baseline: str) -> dict | None:
    """The pooled paired test-AUC difference of `variant` against `baseline`, in the words the intervals allow."""
    pooled = pooled_differences(diffs, baseline)
    if variant not in pooled.index:
        return None
    row = pooled.loc[variant]
    return {"variant": variant, "baseline": baseline, "verdict": row.verdict, "text": describe(row.delta, row.ci_low, row.ci_high),
            "seeds": int(row.n_seeds), "seed_sd": _num(row.seed_sd)}


def timing(ratio: float) -> str:
    """A cost ratio in words that respect the timing noise."""
    if pd.isna(ratio):
        return "n/a"
    if abs(ratio - 1) < TIMING_NOISE:
        return f"{ratio:.2f}×, within the ±{TIMING_NOISE:.0%} a single timing can vary"
    return f"{ratio:.2f}×"


def _variant_facts(row: pd.Series) -> dict:
    return {"variant": row.variant, "val_auc": _num(row.val_auc), "val_loss": _num(row.best_val_loss), "test_auc": _num(row.test_auc),
            "params": format_parameters(row.trainable_parameters), "lr": f"{row.lr:g}", "checkpoint_mib": _num(row.checkpoint_mb, 2)}


def _best(rows: pd.DataFrame) -> pd.Series:
    """The row with the highest validation AUC of its tested checkpoint (the first when none has one)."""
    return rows.loc[rows.val_auc.idxmax()] if rows.val_auc.notna().any() else rows.iloc[0]


def rank_sweep(summary: pd.DataFrame, diffs: pd.DataFrame) -> dict | None:
    """The paper's LoRA family across ranks, judged by whether the ranks' intervals against a baseline overlap."""
    ranks = summary[summary.config_key == "lora"]
    if len(ranks) < 2:
        return None
    out = {"n": len(ranks), "min_rank": int(ranks["rank"].min()), "max_rank": int(ranks["rank"].max())}
    for baseline in ("full", "frozen"):
        pooled = pooled_differences(diffs, baseline)
        if set(ranks.variant) <= set(pooled.index):
            pooled = pooled.loc[list(ranks.variant)]
            top, bottom = pooled.ci_low.idxmax(), pooled.ci_high.idxmin()
            rank_of = dict(zip(ranks.variant, ranks["rank"].astype(int)))
            out["baseline"] = baseline
            if pooled.ci_low.max() <= pooled.ci_high.min():
                out["text"] = f"their intervals against {baseline} all overlap: no rank is told apart from another"
            else:
                out["text"] = (f"r={rank_of[top]}'s interval against {baseline} lies wholly above r={rank_of[bottom]}'s; "
                               "ranks whose intervals overlap are not told apart")
            return out
    out["text"] = "there is no baseline run to give the ranks intervals, so they are not compared"
    return out


def analysis(summary: pd.DataFrame, diffs: pd.DataFrame) -> dict:
    """Findings stated on the slides, each computed from the summary and the paired differences.

    Comparative words ("higher", "lower", "indistinguishable") come from the
    95% intervals of the paired bootstrap, never from the sign of a point estimate.
    """
    best = _best(summary)
    out = {"best_variant": best.variant, "best_val_auc": _num(best.val_auc)}
    baselines = {f: summary[summary.family == f].iloc[0] for f in ("full", "frozen") if (summary.family == f).any()}
    for family, row in baselines.items():
        out[family] = _variant_facts(row)
    out["comparisons"] = [
        c for v in summary.variant for b in ("full", "frozen") if v != b and (c := comparison(diffs, v, b)) is not None
    ]
    # one row per variant, a column per baseline: the slide holds every variant of a study with several methods
    out["comparison_rows"] = [
        {"variant": v, **{b: next((c["text"] for c in out["comparisons"] if c["variant"] == v and c["baseline"] == b), "—")
                          for b in ("full", "frozen")}}
        for v in summary.variant if any(c["variant"] == v for c in out["comparisons"])
    ]
    lora = summary[summary.family == "lora"]
    if len(lora):
        top = _best(lora)
        entry = {**_variant_facts(top), "rank": int(top["rank"]), "step_ms": _num(top.step_time_ms, 1),
                 "vs_full": comparison(diffs, top.variant, "full"), "vs_frozen": comparison(diffs, top.variant, "frozen")}
        if "full" in baselines:
            full = baselines["full"]
            step_ratio = top.step_time_ms / full.step_time_ms
            entry.update(
                params_pct_of_full=_num(top.trainable_vs_full_percent, 2),
                step_time=timing(step_ratio),
                faster=bool(step_ratio < 1 - TIMING_NOISE),
                slower=bool(step_ratio > 1 + TIMING_NOISE),
                memory_ratio=_num(top.peak_memory_mb / full.peak_memory_mb, 2),
                checkpoint_ratio=_num(top.checkpoint_mb / full.checkpoint_mb, 3),
            )
        merged, unmerged, base = top.latency_merged_ms, top.latency_unmerged_ms, top.latency_base_ms
        if not pd.isna(merged):
            entry["latency"] = {"base": _num(base, 1), "unmerged": _num(unmerged, 1), "merged": _num(merged, 1),
                                "unmerged_vs_base": timing(unmerged / base), "merged_vs_base": timing(merged / base)}
        out["lora"] = entry
    sweep = rank_sweep(summary, diffs)
    if sweep:
        out["ranks"] = sweep
    return out


# The LoRA paper's Table 1: adapter layers add 2% to 30% inference latency at small batch (GPT-2 medium, one GPU)
PAPER_ADAPTER_OVERHEAD = (2, 30)
# The methods set against LoRA on the comparison slide (besides the full and frozen baselines)
METHOD_FAMILIES = ("lora", "bitfit", "adapter", "prompt", "peft")
# Columns of the comparison slide: quality with its paired interval (Δ vs full), then cost
METHOD_METRICS = ("test_auc", "step_time_ms", "checkpoint_mb")


def methods_table(summary: pd.DataFrame) -> Markdown | None:
    """LoRA against the other adaptation methods, with the full and frozen baselines: None unless a method besides LoRA ran."""
    if not summary.family.isin(METHOD_FAMILIES[1:]).any():
        return None
    rows = summary[summary.family.isin(("full", "frozen", *METHOD_FAMILIES))]
    table = display_table(rows, METHOD_METRICS).drop(columns=["seeds", "% of full"])  # narrow enough for one slide
    table["variant"] = table["variant"].map(escape)
    return Markdown(table.to_markdown(index=False, colalign=["left"] + ["right"] * (table.shape[1] - 1), disable_numparse=True))


def _overhead(percent: float) -> str:
    return "n/a" if pd.isna(percent) else f"{percent:+.0f}%"


def latency_rows(latency: pd.DataFrame) -> dict:
    """The latency slide: one row per method that adds to the model, base / unmerged / merged ms (overhead) at each batch size.

    Variants that are the base architecture (full, frozen, partial) time the base only; they are named, not tabled.
    """
    def cell(ms, percent):
        return "—" if pd.isna(ms) else f"{ms:.2f} ({_overhead(percent)})"

    added = latency[latency.unmerged_ms.notna()]
    batches = sorted(int(b) for b in added.batch.unique())
    rows = []
    for variant, group in added.groupby("variant", sort=False):
        by_batch = {int(r.batch): r for r in group.itertuples()}
        rows.append({"variant": variant, "cells": [
            part for b in batches for part in (
                (_num(by_batch[b].base_ms, 2), cell(by_batch[b].unmerged_ms, by_batch[b].unmerged_overhead_percent),
                 cell(by_batch[b].merged_ms, by_batch[b].merged_overhead_percent)) if b in by_batch else ("n/a", "n/a", "n/a"))]})
    base_only = [v for v in dict.fromkeys(latency.variant) if v not in set(added.variant)]
    return {"batches": batches, "rows": rows, "base_only": base_only}


def _verdict(seen: bool) -> str:
    return "confirmed" if seen else "not seen here"


def introduction_claims(summary: pd.DataFrame, latency: pd.DataFrame, context: str) -> dict:
    """The outline's two claims about the other methods, each with this run's number and a verdict from the data.

    Adapters add inference latency: confirmed when an adapter variant's batch-1 overhead over the base exceeds
    the timing noise (:data:`TIMING_NOISE`). Prompts reduce the available sequence length: confirmed when the
    prompts took audio positions (30 s context); with clip context they lengthen the sequence instead.
    """
    out = {}
    small = latency[latency.batch == 1]
    adapters = small[small.family == "adapter"]
    if len(adapters):
        worst = adapters.loc[adapters.unmerged_overhead_percent.idxmax()]
        big = latency[(latency.family == "adapter") & (latency.batch > 1)]
        out["adapter"] = {
            "variant": worst.variant, "batch1": _overhead(worst.unmerged_overhead_percent),
            "study_batch": int(big.batch.iloc[0]) if len(big) else None,
            "at_study_batch": _overhead(big.set_index("variant").unmerged_overhead_percent.get(worst.variant, float("nan"))) if len(big) else None,
            "paper": f"+{PAPER_ADAPTER_OVERHEAD[0]}% to +{PAPER_ADAPTER_OVERHEAD[1]}%",
            "verdict": _verdict(bool(worst.unmerged_overhead_percent > 100 * TIMING_NOISE)),
        }
    merged = small[(small.family == "lora") & small.merged_ms.notna()]
    if len(merged):
        row = merged.loc[merged.merged_overhead_percent.abs().idxmax()]
        out["lora_merged"] = {"variant": row.variant, "batch1": _overhead(row.merged_overhead_percent),
                              "verdict": _verdict(bool(abs(row.merged_overhead_percent) < 100 * TIMING_NOISE))}
    prompts = summary[summary.family == "prompt"]
    if len(prompts):
        longest = prompts.loc[prompts.prompt_length.idxmax()]
        frozen = summary[summary.family == "frozen"]
        entry = {"variant": longest.variant, "length": int(longest.prompt_length), "context": context,
                 "positions": _num(longest.sequence_positions, 0), "audio_positions": _num(longest.sequence_audio_positions, 0),
                 "seconds_lost": _num(longest.audio_seconds_lost, 2),
                 "step_vs_frozen": timing(longest.step_time_ms / frozen.step_time_ms.iloc[0]) if len(frozen) else None}
        entry["verdict"] = _verdict(bool(longest.audio_seconds_lost > 0))
        out["prompt"] = entry
    return out


def snr_findings(auc_snr: pd.DataFrame, best_variant: str) -> dict | None:
    """The AUC of the lowest and highest injection-SNR bins for the best variant (mean over seeds)."""
    rows = auc_snr[auc_snr.variant == best_variant]
    if rows.empty:
        return None
    bins = rows.groupby("snr_bin").agg(low=("snr_low", "first"), high=("snr_high", "first"), auc=("auc", "mean"))
    first, last = bins.iloc[0], bins.iloc[-1]
    return {"variant": best_variant, "bins": len(bins), "low_range": f"{first.low:.1f} to {first.high:.1f}", "low_auc": _num(first.auc),
            "high_range": f"{last.low:.1f} to {last.high:.1f}", "high_auc": _num(last.auc)}


def overrides(base, full):
    """The part of `full` that differs from `base` (a shifted test set's data, as its overrides)."""
    if isinstance(full, dict) and isinstance(base, dict):
        return {k: d for k, v in full.items() if (d := overrides(base.get(k), v)) not in (None, {})}
    return None if full == base else full


def _changed(base, full, prefix: str = "") -> list[str]:
    """The leaves where `full` differs from `base`, as "key.path value" (a test set's shift, in words)."""
    diff = overrides(base, full)
    if isinstance(diff, dict):
        return [c for k, v in diff.items() for c in _changed(base.get(k) if isinstance(base, dict) else None, full[k], f"{prefix}{k}.")]
    return [] if diff is None else [f"{prefix[:-1]} {full}"]


def shift_findings(shift: pd.DataFrame, config: dict) -> dict | None:
    """The shifted test sets in words and one table: what each changes, which variant scores highest, and which
    variants differ from full fine-tuning on it by the paired intervals (never by point estimates)."""
    if set(shift.test_set) <= {IN_DISTRIBUTION}:
        return None
    sets = []
    for name, rows in shift.groupby("test_set", sort=False):
        if name == IN_DISTRIBUTION:
            continue
        best = rows.loc[rows.auc.idxmax()] if rows.auc.notna().any() else rows.iloc[0]
        in_distribution = shift[(shift.test_set == IN_DISTRIBUTION) & (shift.variant == best.variant)].auc
        by_verdict = {word: list(rows.variant[rows.verdict_vs_full == word]) for word in ("higher", "lower")}
        sets.append({
            "name": name,
            "changes": _changed(config["data"], config["evaluation"]["test_sets"].get(name, {})) or ["another data seed only"],
            "best": best.variant, "best_auc": _num(best.auc), "best_in_distribution": _num(in_distribution.iloc[0] if len(in_distribution) else None),
            "higher": by_verdict["higher"], "lower": by_verdict["lower"],
            "compared": int(rows.verdict_vs_full.notna().sum()),
            "at_chance": list(rows.variant[~rows.above_chance.astype(bool)]),  # 95% interval of the AUC covers 0.5
            "one_class": list(rows.variant[rows.one_class > 0]),
        })
    table = {"variant": list(dict.fromkeys(shift.variant))}
    for name, rows in shift.groupby("test_set", sort=False):
        rows = rows.set_index("variant")
        heading = "in distribution" if name == IN_DISTRIBUTION else name
        table[heading] = [
            f"{_num(rows.auc.get(v), 3)} ({_num(rows.auc_ci_low.get(v), 3)}–{_num(rows.auc_ci_high.get(v), 3)}) / {_num(rows.brier.get(v), 3)}"
            for v in table["variant"]
        ]
        if name != IN_DISTRIBUTION and rows.verdict_vs_full.notna().any():
            table[f"{heading} vs full"] = [rows.verdict_vs_full.get(v) if isinstance(rows.verdict_vs_full.get(v), str) else "n/a"
                                            for v in table["variant"]]
    frame = pd.DataFrame(table)
    frame = frame.rename(columns=escape).map(escape)
    md = frame.to_markdown(index=False, colalign=["left"] + ["right"] * (frame.shape[1] - 1), disable_numparse=True)
    return {"sets": sets, "table_md": Markdown(md)}


def not_learned(runs: pd.DataFrame) -> list[dict]:
    """The runs flagged by gwlora.train as not having learned, the selected-lr ones first, with the reason."""
    if "did_not_learn" not in runs:
        return []
    flagged = runs[runs.did_not_learn.astype(bool)].sort_values("selected", ascending=False, kind="stable")
    out = []
    for r in flagged.itertuples():
        reasons = [text for flag, text in (("val_loss_flat", "val loss flat"), ("test_one_class", "one class")) if getattr(r, flag, False) == True]  # noqa: E712 - numpy bools, NaN for none
        out.append({"run": f"{r.variant} lr {r.lr:g} seed {r.seed}", "selected": bool(r.selected), "because": ", ".join(reasons) or r.did_not_learn_because})
    return out


def deck_context(tables_dir: Path, figures_dir: Path, config: dict, renderer: str) -> dict:
    """Everything the template prints, from the aggregate stage's tables and study.json and the plot stage's figures."""
    summary = pd.read_csv(tables_dir / "summary.csv")
    runs = pd.read_csv(tables_dir / "runs.csv")
    if summary.empty:
        raise StageError(f"{tables_dir / 'summary.csv'} has no variants")
    study = read_json(tables_dir / "study.json")
    base, ffn = study["base_model"], study["base_model"]["encoder_ffn_dim"]
    frozen = summary[summary.family == "frozen"]
    lora_rows = []
    for v in summary[summary.family == "lora"].itertuples():
        variant = study["variants"][v.variant]
        budget = lora_budget(variant, base, ffn)
        measured = v.trainable_parameters - frozen.trainable_parameters.iloc[0] if len(frozen) else None
        lora_rows.append({"variant": v.variant, "rank": variant["rank"], "alpha": variant["alpha"], "targets": variant["target_modules"],
                          "scaling": "α/√r" if variant["rslora"] else "α/r", "dora": variant["dora"], "measured": measured, **budget})
    snr_path = tables_dir / "auc_by_snr.csv"
    auc_snr = pd.read_csv(snr_path) if snr_path.exists() else pd.DataFrame(columns=["variant"])
    diffs = pd.read_csv(tables_dir / "differences.csv")
    latency = pd.read_csv(tables_dir / "latency.csv")
    best = _best(summary).variant
    test_sets = {name: overrides(config["data"], data) for name, data in config["evaluation"]["test_sets"].items()}
    config_sections = {  # the shifted test sets as the overrides they are, not as the whole data sections validation made of them
        "data": {"experiment": config["experiment"], "seed": config["seed"], "data": config["data"]}
        | ({"evaluation": {"test_sets": test_sets}} if test_sets else {}),
        "model and training": {k: config[k] for k in config if k not in ("experiment", "seed", "data", "evaluation")},
    }
    environment = study["environment"]
    return {
        "experiment": config["experiment"],
        "config": config,
        "constants": constants.as_dict(),
        "audio": config["data"]["source"] in constants.AUDIO_SOURCES,
        "timing_noise": TIMING_NOISE,
        "config_yaml": {name: yaml.safe_dump(part, sort_keys=False, default_flow_style=None, width=70).rstrip() for name, part in config_sections.items()},
        "model": base,
        "ffn_dim": ffn,
        "lora_budgets": lora_rows,
        "demo_model": bool(base["random_init"]),
        "data": study["data"],
        "variants": summary.to_dict(orient="records"),
        "table_quality_md": Markdown(markdown_table(summary, QUALITY_METRICS, learned=False).rstrip()),
        "table_calibration_md": Markdown(markdown_table(summary, CALIBRATION_METRICS, parameters=False).rstrip()),
        "table_cost_md": Markdown(markdown_table(summary, COST_METRICS, parameters=False, learned=False).rstrip()),
        "analysis": analysis(summary, diffs),
        "methods_md": methods_table(summary),
        "latency": latency_rows(latency),
        "claims": introduction_claims(summary, latency, config["model"]["context"]),
        "snr": snr_findings(auc_snr, best),
        "shift": shift_findings(pd.read_csv(tables_dir / "shift.csv"), config),
        "not_learned": not_learned(runs),
        "code": {key: code_excerpt(PACKAGE / module, name) for key, (module, name) in CODE_EXCERPTS.items()},
        "hardware": environment["hardware"],
        "git_commit": ", ".join(environment["git_commits"]),
        "n_runs": len(runs),
        "seeds": sorted(runs.seed.unique().tolist()),
        "devices": sorted(runs.device.unique().tolist()),
        "precision": sorted(runs.precision.unique().tolist()),
        "versions": environment["versions"],
        "renderer": renderer,
        "figures": figure_paths(figures_dir, config),
    }


def figure_paths(figures_dir: Path, config: dict) -> dict[str, Markdown]:
    """{figure name: its path relative to the deck} for every figure the plot stage draws for `config`."""
    names = figure_names(config)
    missing = [name for name in names if not (figures_dir / f"{name}.png").is_file()]
    if missing:
        raise StageError(f"{figures_dir}: no {', '.join(f'{m}.png' for m in missing)}; run the plot stage first")
    return {name: plain_path(f"figures/{name}.png") for name in names}


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
    env.filters["num"] = lambda value, decimals=4: Markdown(_num(value, decimals))
    env.filters["params"] = lambda n: Markdown(format_parameters(n))
    env.filters["code"] = lambda value: code_span(value, quarto)
    env.filters["codeblock"] = lambda value, language="": code_block(value, language, quarto)
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
            dst.writestr(item, data)
    return out


def render_quarto(build: Path) -> tuple[Path, Path]:
    """Quarto's revealjs deck (self-contained, see report/_quarto.yml) and its PowerPoint deck."""
    _run_renderer(["quarto", "render", "slides.qmd", "--to", "revealjs"], build, "quarto")
    pptx_reference(build / PPTX_REFERENCE)
    _run_renderer(["quarto", "render", "slides.qmd", "--to", "pptx", "-M", f"reference-doc:{PPTX_REFERENCE}"], build, "quarto")
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
    return build / "slides.html", build / "slides.pptx"


def build_deck(
    *, tables_dir, figures_dir, config: dict, out_dir, source_dir, renderer: str = "auto", pdf: bool = False
) -> dict:
    """Fill the template, render HTML and PPTX (and a PDF when `pdf`) into `out_dir`."""
    tables_dir, figures_dir, source_dir = map(Path, (tables_dir, figures_dir, source_dir))
    if renderer == "auto":
        renderer = "quarto" if quarto_available() else "pandoc"
    if renderer == "quarto" and not quarto_available():
        raise StageError("renderer quarto requested but `quarto` is not on PATH")
    if pdf and browser.find_chromium() is None:
        raise StageError(
            "deck.pdf is true but no Chromium is on PATH to print slides.pdf: install one "
            "(Debian: apt-get install chromium) or set deck.pdf: false"
        )
    context = deck_context(tables_dir, figures_dir, config, renderer)
    text = fill_template(source_dir / "slides.qmd", context, renderer)
    with atomic_dir(out_dir) as tmp:
        build = tmp / "build"
        shutil.copytree(source_dir, build, ignore=shutil.ignore_patterns("slides.qmd", "_site", ".quarto"))
        (build / "slides.qmd").write_text(text)
        (build / "figures").mkdir()
        for path in context["figures"].values():
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
        record = {"renderer": renderer, "outputs": outputs, "sections": template_outline(source_dir / "slides.qmd"), "figures": context["figures"]}
        write_json(tmp / "deck.json", record)
    return record


def _parser(p):
    p.add_argument("--source", required=True, help="deck source directory (report/: slides.qmd template, bibliography)")
    p.add_argument("--tables", required=True, help="tables directory of the aggregate stage")
    p.add_argument("--figures", required=True, help="figures directory of the plot stage")
    p.add_argument("--config", type=json_arg, required=True, help="the validated workflow config, as JSON")
    p.add_argument("--renderer", choices=["auto", "quarto", "pandoc"], default="auto", help="quarto, the offline pandoc fallback, or auto (quarto when on PATH)")
    p.add_argument("--pdf", action="store_true", help="also print slides.pdf with headless Chromium (config deck.pdf)")
    p.add_argument("--out", required=True, help="output directory of the deck")


def _run(args):
    """Fill the slide template from the results and render the deck."""
    record = build_deck(
        tables_dir=args.tables, figures_dir=args.figures,
        config=args.config, out_dir=args.out, source_dir=args.source, renderer=args.renderer,
        pdf=args.pdf,
    )
    log.info("wrote %s in %s (renderer: %s)", ", ".join(record["outputs"]), args.out, record["renderer"])


def main(argv=None) -> int:
    return run_stage("deck", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
