"""aggregate -> plot -> deck on real (tiny) runs."""

import json
import os
import re

import numpy as np
import pandas as pd
import pytest

from conftest import OUTLINE, REPO, assert_figure_drawn, tiny_config as built_config
from gwlora.aggregate import aggregate
from gwlora.cli import StageError
from gwlora.config import expand_variants
from gwlora.constants import SPLITS
from gwlora.deck import build_deck
from gwlora.findings import findings, write_findings
from gwlora.plot import figure_names, make_figures
from gwlora.evaluate import score_run
from gwlora.train import train_run


@pytest.fixture(scope="module")
def runs(built, tmp_path_factory):
    root, config = built["root"], built["config"]
    out = tmp_path_factory.mktemp("runs")
    variants = expand_variants(config["train"])
    dirs = []
    for name, seeds in (("full", [0]), ("frozen", [0, 1]), ("lora-r2", [0])):
        for seed in seeds:
            run_dir = out / name / f"seed{seed}"
            train_run(
                features={s: root / "features" / s for s in ("train", "val", "test")},
                model_dir=root / "base_model", model_config=config["model"], train_config=config["train"],
                variant=variants[name], seed=seed, out_dir=run_dir,
            )
            dirs.append(run_dir)
    return dirs


TEST_SET = "quiet"  # the demo's shifted test set; scored here on the test split's features (so its numbers are known)


@pytest.fixture(scope="module")
def tables(built, runs, tmp_path_factory):
    for run_dir in runs:
        score_run(run_dir, built["root"] / "features" / "test", run_dir / "shift" / TEST_SET)
    out = tmp_path_factory.mktemp("tables")
    config = {**built["config"], "evaluation": {"test_sets": {TEST_SET: built["config"]["evaluation"]["test_sets"][TEST_SET]}}}
    aggregate(list(reversed(runs)), out, built["root"] / "base_model", [built["root"] / "data" / s for s in SPLITS], config)
    return out


def test_evaluate_reproduces_each_runs_test_split_to_the_last_digit(runs, tables):
    """The evaluate stage rebuilds the model from summary.json and scores the best checkpoint as training scored its test split."""
    for run_dir in runs:
        summary = json.loads((run_dir / "summary.json").read_text())
        scored = json.loads((run_dir / "shift" / TEST_SET / "metrics.json").read_text())
        assert scored["auc"] == summary["test_auc"] and scored["brier"] == summary["test_brier"]
        assert scored["accuracy"] == summary["test_accuracy"] and scored["tpr_at_fpr"] == summary["test_tpr_at_fpr"]
        assert (run_dir / "shift" / TEST_SET / "predictions.csv").read_bytes() == (run_dir / "predictions.csv").read_bytes()
    shift = pd.read_csv(tables / "shift.csv").set_index(["test_set", "variant"])
    for variant in ("full", "frozen", "lora-r2"):
        assert shift.loc[(TEST_SET, variant), "auc"] == pytest.approx(shift.loc[("test", variant), "auc"], abs=0)
        assert shift.loc[(TEST_SET, variant), "auc_ci_low"] < shift.loc[(TEST_SET, variant), "auc"] < shift.loc[(TEST_SET, variant), "auc_ci_high"]
    assert shift.loc[(TEST_SET, "frozen"), "verdict_vs_full"] in ("higher", "lower", "indistinguishable", "not converged")


def test_every_run_says_whether_it_learned(runs):
    for run_dir in runs:
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["initial_val_loss"] > 0 and summary["chance_val_loss"] == pytest.approx(np.log(2), abs=0.01)
        assert isinstance(summary["did_not_learn"], bool) and (summary["did_not_learn_because"] != "") == summary["did_not_learn"]


def test_summary_orders_variants_and_averages_seeds(runs, tables):
    summary = pd.read_csv(tables / "summary.csv")
    assert list(summary.variant) == ["full", "frozen", "lora-r2"]
    runs_df = pd.read_csv(tables / "runs.csv")
    frozen = runs_df[runs_df.variant == "frozen"]
    row = summary.set_index("variant").loc["frozen"]
    assert row.seeds == 2
    assert row.val_auc == pytest.approx(frozen.val_auc.mean())
    assert row.val_auc_std == pytest.approx(frozen.val_auc.std())
    assert summary.set_index("variant").loc["full", "trainable_vs_full_percent"] == pytest.approx(100)
    n = 2
    half = 12.706 * frozen.val_auc.std() / n**0.5  # t(0.975, 1 dof)
    assert row.val_auc_ci95 == pytest.approx(half, rel=1e-3)
    assert np.isnan(summary.set_index("variant").loc["full", "val_auc_ci95"])  # one seed: no interval
    md = (tables / "summary.md").read_text()
    assert md.count("\n") == 2 + 3 and "±" in md  # header, rule, three variants; spread shown for 2 seeds


def test_latex_and_seed_shaped_tables(tables):
    tex = (tables / "summary.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and tex.count("\\\\") == 4  # header + 3 variants
    assert "frozen" in tex and "$\\pm$" in tex and "100.00\\%" in tex
    seed = (tables / "original_study_table.md").read_text().splitlines()
    assert [c.strip() for c in seed[0].strip("|").split("|")] == [
        "variant", "seeds", "did not learn", "still improving", "lr", "trainable params", "% of full", "peak memory (MiB)", "val AUC", "val loss",
    ]
    assert len(seed) == 2 + 3


def test_curves_table_holds_every_evaluation(runs, tables):
    curves = pd.read_csv(tables / "curves.csv")
    assert len(curves) == 4 * 2 and set(curves.variant) == {"full", "frozen", "lora-r2"}


def test_latency_table_has_every_variant_at_batch_1_and_the_study_batch(tables):
    latency = pd.read_csv(tables / "latency.csv")
    assert list(zip(latency.variant, latency.batch)) == [(v, b) for v in ("full", "frozen", "lora-r2") for b in (1, 16)]
    assert latency.base_ms.gt(0).all() and latency.seeds.tolist() == [1, 1, 2, 2, 1, 1]
    lora = latency[latency.variant == "lora-r2"]
    assert lora.unmerged_ms.notna().all() and lora.merged_ms.notna().all() and lora.merged_overhead_percent.notna().all()
    assert latency[latency.variant != "lora-r2"][["unmerged_ms", "merged_ms"]].isna().all().all()  # nothing added to the base


def test_aggregate_rejects_unfinished_run(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(StageError, match="no summary.json"):
        aggregate([tmp_path / "run"], tmp_path / "tables", tmp_path / "model", [], built_config())


def test_predictions_give_auc_per_snr_bin(runs, tables):
    pred = pd.read_csv(runs[0] / "predictions.csv")
    assert list(pred.columns) == ["window", "label", "snr", "logit"] and len(pred) == 32
    assert (pred.snr[pred.label == 0] == 0).all() and (pred.snr[pred.label == 1] > 0).all()
    by_snr = pd.read_csv(tables / "auc_by_snr.csv")
    assert len(by_snr) == 4 * 4  # 4 runs x 4 equal-count SNR bins
    full = by_snr[by_snr.variant == "full"]
    signals = pred[pred.label == 1].sort_values("snr")
    assert full.n_signal.sum() == len(signals) and (full.n_noise == (pred.label == 0).sum()).all()
    # the lowest bin by hand: its signals against all noise
    from sklearn.metrics import roc_auc_score

    low = signals[signals.snr < full.snr_high.iloc[0]]
    noise = pred[pred.label == 0]
    expected = roc_auc_score([1] * len(low) + [0] * len(noise), list(low.logit) + list(noise.logit))
    assert full.auc.iloc[0] == pytest.approx(expected)


def test_seed_bands_span_the_seeds(tables):
    from gwlora.plot import seed_bands

    curves = pd.read_csv(tables / "curves.csv")
    bands = seed_bands(curves, "val_auc")
    frozen = bands[bands.variant == "frozen"]
    seeds = curves[curves.variant == "frozen"].groupby("step").val_auc
    assert list(frozen["mean"]) == pytest.approx(list(seeds.mean()))
    assert list(frozen.low) == list(seeds.min()) and list(frozen.high) == list(seeds.max())
    assert (frozen.seeds == 2).all() and (bands[bands.variant == "full"].seeds == 1).all()


FIGURES = figure_names(built_config())  # the demo's shape: LoRA, latency, injections: every figure


def test_figures_are_written(built, tables, tmp_path):
    paths = make_figures(tables / "curves.csv", tmp_path, tables / "runs.csv", tables / "auc_by_snr.csv", built["root"] / "features" / "test", figures=FIGURES, summary_csv=tables / "summary.csv",
                         shift_runs_csv=tables / "shift_runs.csv", efficiency_csv=tables / "efficiency.csv")
    assert sorted(p.name for p in paths) == sorted(f"{stem}.{fmt}" for stem in FIGURES for fmt in ("png", "svg"))
    for path in paths:
        assert_figure_drawn(path)


@pytest.fixture(scope="module")
def figures(built, tables, tmp_path_factory):
    figures = tmp_path_factory.mktemp("figures")
    make_figures(tables / "curves.csv", figures, tables / "runs.csv", tables / "auc_by_snr.csv", built["root"] / "features" / "test", figures=FIGURES, summary_csv=tables / "summary.csv",
                         shift_runs_csv=tables / "shift_runs.csv", efficiency_csv=tables / "efficiency.csv")
    return figures


@pytest.fixture(scope="module")
def deck(built, tables, figures, tmp_path_factory):
    from gwlora.browser import find_chromium

    out = tmp_path_factory.mktemp("deck") / "slides"
    record = build_deck(
        tables_dir=tables, figures_dir=figures,
        config=built["config"], out_dir=out, source_dir=REPO / "report", snakefile=REPO / "Snakefile", renderer="pandoc", pdf=find_chromium() is not None,
    )
    return out, record


def slide_titles(html: str) -> list[str]:
    return re.findall(r'<section[^>]*class="[^"]*level[12][^"]*"[^>]*>\s*<h[12][^>]*>(.*?)</h[12]>', html, re.S)


def test_fallback_deck_has_every_section_and_is_self_contained(deck):
    out, record = deck
    html = (out / "index.html").read_text()
    assert record["renderer"] == "pandoc"
    headings = re.findall(r'<section[^>]*class="[^"]*level1[^"]*"[^>]*>\s*<h1>(.*?)</h1>', html)
    assert headings == list(OUTLINE)
    assert html.count('src="data:image/png;base64,') == len(FIGURES)  # every figure embedded
    assert not re.search(r'src="https?://|<link[^>]+href="https?://|url\(["\']?https?://', html)  # nothing fetched at view time (links may point out)
    assert "<math" in html  # maths as MathML, rendered offline
    assert "Hu et al. (2021)" in html and "adaptation of large language models" in html  # the bibliography was rendered (report/slides.csl)
    assert record["outputs"][:3] == ["index.html", "slides.pptx", "slides.qmd"]
    assert record["sections"] == list(OUTLINE)  # read from the template's headings


def test_pptx_holds_every_slide_and_figure(deck):
    import zipfile

    out, record = deck
    titles = slide_titles((out / "index.html").read_text())
    with zipfile.ZipFile(out / "slides.pptx") as pptx:
        names = pptx.namelist()
        text = " ".join(pptx.read(n).decode() for n in names if re.match(r"ppt/slides/slide\d+\.xml$", n))
    assert len([n for n in names if re.match(r"ppt/slides/slide\d+\.xml$", n)]) >= len(titles)
    assert len([n for n in names if n.startswith("ppt/media/")]) >= len(record["figures"])
    for section in OUTLINE:
        assert section in text, section


def test_code_on_the_slides_is_the_package_source(deck):
    from gwlora.deck import CODE_EXCERPTS, PACKAGE, code_excerpt

    out, _ = deck
    source = (out / "slides.qmd").read_text()
    for module, name in CODE_EXCERPTS.values():
        excerpt = code_excerpt(PACKAGE / module, name)
        lines = (PACKAGE / module).read_text().splitlines()[excerpt["first"] - 1 : excerpt["last"]]
        assert excerpt["text"].splitlines()[0].strip() == lines[0].strip() and len(lines) == len(excerpt["text"].splitlines())
        assert excerpt["text"] in source and f"lines {excerpt['first']}–{excerpt['last']}" in source


def test_missing_excerpt_marker_is_named(tmp_path):
    from gwlora.deck import code_excerpt

    (tmp_path / "m.py").write_text("x = 1\n")
    with pytest.raises(StageError, match=r"m.py: no `# deck: step` excerpt marker"):
        code_excerpt(tmp_path / "m.py", "step")


@pytest.fixture(scope="module")
def walked(deck, tmp_path_factory):
    from gwlora.browser import find_chromium, walk_deck

    if find_chromium() is None:
        if os.environ.get("GWLORA_REQUIRE_CHROMIUM"):
            pytest.fail("GWLORA_REQUIRE_CHROMIUM is set but no Chromium is on PATH")
        pytest.skip("no headless Chromium on PATH (CI installs Debian's chromium)")
    out, _ = deck
    return walk_deck(out / "index.html", tmp_path_factory.mktemp("screenshots"))


def test_headless_chromium_walks_every_slide(deck, walked):
    out, _ = deck
    titles = slide_titles((out / "index.html").read_text())
    assert walked.kind == "fallback"
    assert len(walked.slides) == 1 + len(titles)  # the title slide, then every section and slide
    assert set(OUTLINE) <= {s.title for s in walked.slides}
    for slide in walked.slides:
        assert_figure_drawn(slide.screenshot)  # every slide shows something, none is a blank page
    assert walked.problems() == []  # no console error, no blank, broken-image or overflowing slide
    assert sum(s.images for s in walked.slides) == len(FIGURES)


def test_walk_reports_a_broken_slide(walked, deck, tmp_path):
    from gwlora.browser import walk_deck

    out, _ = deck
    html = (out / "index.html").read_text()
    broken = html.replace('src="data:image/png;base64,', 'src="data:image/png;base64,AAAA', 1)
    broken = broken.replace("</script>", "console.error('boom');</script>", 1)
    (tmp_path / "broken.html").write_text(broken)
    problems = walk_deck(tmp_path / "broken.html").problems()
    assert any("console.error: boom" in p for p in problems)
    assert any("broken images" in p for p in problems)


def test_pdf_has_one_page_per_slide(deck, walked):
    out, record = deck
    assert "slides.pdf" in record["outputs"]
    pages = re.findall(rb"/Type\s*/Page\b", (out / "slides.pdf").read_bytes())
    assert len(pages) == len(walked.slides)


def test_slide_numbers_come_from_the_tables(deck, tables):
    out, _ = deck
    html = (out / "index.html").read_text()
    summary = pd.read_csv(tables / "summary.csv").set_index("variant")
    learned = summary[summary.did_not_learn == 0]  # best by the lr-selection metric (val loss), among variants that learned
    if len(learned):
        assert f"<strong>{learned.best_val_loss.idxmin()}</strong> ({learned.best_val_loss.min():.4f})" in html
    else:
        assert "No variant learned, so none is called best" in html
    assert f"{summary.loc['full', 'best_val_loss']:.4f}" in html
    # a table wider than a slide continues by columns: "(1 of 2)" where the several seeds' "mean ± sd" cells widen it
    assert re.search(r">Results: quality( \(1 of \d\))?</h2>", html) and re.search(r">Results: costs( \(1 of \d\))?</h2>", html)
    assert f"{summary.loc['lora-r2', 'step_time_ms']:,.1f}" in html  # the cost table
    assert "Demo run" in html  # a random-initialised encoder is labelled as such


def test_a_pdf_without_chromium_is_a_clear_error_before_any_output(built, tables, figures, tmp_path, monkeypatch):
    monkeypatch.setattr("gwlora.browser.find_chromium", lambda: None)
    with pytest.raises(StageError, match="deck.pdf is true but no Chromium"):
        build_deck(
            tables_dir=tables, figures_dir=figures,
            config=built["config"], out_dir=tmp_path / "slides", source_dir=REPO / "report", snakefile=REPO / "Snakefile", renderer="pandoc", pdf=True,
        )
    assert not (tmp_path / "slides").exists()


def test_template_with_unknown_value_fails_naming_it(built, tables, figures, tmp_path):
    source = tmp_path / "report"
    source.mkdir()
    (source / "slides.qmd").write_text("# Intro\n\n{{ no_such_value }}\n")
    with pytest.raises(StageError, match="no_such_value"):
        build_deck(
            tables_dir=tables, figures_dir=figures,
            config=built["config"], out_dir=tmp_path / "slides", source_dir=source, snakefile=REPO / "Snakefile", renderer="pandoc",
        )
    assert not (tmp_path / "slides").exists()


def test_lora_families_are_listed_together():
    from gwlora.families import sort_key

    names = {("lora-rs", 2): "lora-rs-r2", ("lora", 8): "lora-r8", ("lora-rs", 8): "lora-rs-r8", ("lora", 2): "lora-r2"}
    ordered = sorted(names, key=lambda k: sort_key({"family": "lora", "config_key": k[0], "rank": k[1]}))
    assert [names[k] for k in ordered] == ["lora-r2", "lora-r8", "lora-rs-r2", "lora-rs-r8"]


def test_lora_budget_counts_what_peft_trains(deck, tables):
    """The deck's r(d + k) count of adapter parameters equals the trained count (LoRA minus the head-only run)."""
    out, _ = deck
    summary = pd.read_csv(tables / "summary.csv").set_index("variant")
    measured = int(summary.loc["lora-r2", "trainable_parameters"] - summary.loc["frozen", "trainable_parameters"])
    from gwlora.markdown import escape

    row = next(line for line in (out / "slides.qmd").read_text().splitlines() if line.startswith(f"| {escape('lora-r2')} | {escape('q_proj, v_proj')}"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[-2] == cells[-1] == f"{measured:,}"


def test_rank_analysis_reads_only_the_papers_lora_family(tables):
    """A `lora-rs` family (rsLoRA) is not mixed into the rank sweep of plain LoRA; ranks are judged by their intervals."""
    from gwlora.findings import analysis

    summary = pd.read_csv(tables / "summary.csv").assign(did_not_learn=0)  # as if every run learned: only the learned are ranked
    lora = summary[summary.variant == "lora-r2"].iloc[0].to_dict()
    extra = [{**lora, "variant": "lora-r8", "rank": 8, "val_auc": 0.5},
             {**lora, "variant": "lora-rs-r8", "config_key": "lora-rs", "rank": 8, "val_auc": 0.99}]
    pooled = dict(seed="pooled", seed_sd=0.0, n_seeds=2, n_resamples=2000)
    diffs = pd.DataFrame([
        {"variant": "lora-r2", "baseline": "full", "delta": 0.10, "ci_low": 0.05, "ci_high": 0.15, "verdict": "higher", **pooled},
        {"variant": "lora-r8", "baseline": "full", "delta": -0.10, "ci_low": -0.15, "ci_high": -0.05, "verdict": "lower", **pooled},
        {"variant": "lora-rs-r8", "baseline": "full", "delta": 0.0, "ci_low": -0.5, "ci_high": 0.5, "verdict": "indistinguishable", **pooled},
    ])
    result = analysis(pd.concat([summary, pd.DataFrame(extra)], ignore_index=True), diffs, selection="val_auc")
    assert result["ranks"]["n"] == 2 and "r=2's interval against full lies wholly above r=8's" in result["ranks"]["text"]
    assert result["best_variant"] == "lora-rs-r8"
    overlapping = diffs.assign(ci_low=[-0.2, -0.2, -0.5], ci_high=[0.2, 0.2, 0.5])
    assert "all overlap" in analysis(pd.concat([summary, pd.DataFrame(extra)], ignore_index=True), overlapping)["ranks"]["text"]


@pytest.mark.parametrize("gap, words", [(0.0, "indistinguishable ("), (3.0, "higher (+"), (-3.0, "lower (-")])
def test_the_slides_compare_by_the_intervals_not_the_sign(tables, gap, words):
    """Two variants scored on the same windows: a difference inside the noise reads "indistinguishable", a clear one "higher" or "lower"."""
    from gwlora.compare import differences_table
    from gwlora.findings import analysis

    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(200), np.zeros(200)].astype(int)
    base = labels * 1.0 + rng.normal(0, 1.5, 400)
    predictions = {}
    for seed in (0, 1):
        noise = rng.normal(0, 0.05, 400)  # seed-to-seed jitter far inside the test noise
        predictions[("full", seed)] = pd.DataFrame({"window": range(400), "label": labels, "logit": base + noise})
        predictions[("lora-r2", seed)] = pd.DataFrame({"window": range(400), "label": labels, "logit": base + gap * labels - noise})
    diffs = differences_table(predictions, [("lora-r2", "full")], n_resamples=500, seed=0)
    summary = pd.read_csv(tables / "summary.csv").assign(did_not_learn=0)  # as if every run learned: only the learned are ranked
    text = analysis(summary, diffs)["lora"]["vs_full"]["text"]
    assert text.startswith(words), text


HOSTILE = "x`</code><img src=x onerror=alert(1)>`{{< include /etc/hostname >}}\n# injected <!--"


def hostile_copy(tables, tmp_path):
    """The tiny study's tables with hostile strings where config and records hold names."""
    import json
    import shutil

    hostile_tables = tmp_path / "tables"
    shutil.copytree(tables, hostile_tables)
    name = "lora-r2<img src=y onerror=alert(2)>"
    for table in ("summary.csv", "runs.csv"):
        frame = pd.read_csv(hostile_tables / table)
        frame["variant"] = frame["variant"].replace("lora-r2", name)
        frame.to_csv(hostile_tables / table, index=False)
    study = json.loads((hostile_tables / "study.json").read_text())
    study["base_model"].update(source=HOSTILE, random_init=False)
    study["variants"][name] = study["variants"].pop("lora-r2")
    study["environment"]["hardware"]["cpu"] = HOSTILE
    (hostile_tables / "study.json").write_text(json.dumps(study))
    config = {**built_config(), "experiment": HOSTILE}
    config["data"] = {**config["data"], "psd": "</code>`<img src=z onerror=alert(3)>`"}
    frames = {path.stem: pd.read_csv(path) for path in hostile_tables.glob("*.csv")}
    write_findings(hostile_tables / "findings.json", findings(frames, study, config))  # the hostile name in the findings too
    return hostile_tables, config


def test_hostile_names_reach_the_deck_as_text_not_markup(built, tables, figures, tmp_path):
    """Config strings and record fields cannot open code spans, HTML tags, headings or Quarto shortcodes in the deck."""
    hostile_tables, config = hostile_copy(tables, tmp_path)
    out = tmp_path / "slides"
    build_deck(
        tables_dir=hostile_tables, figures_dir=figures,
        config=config, out_dir=out, source_dir=REPO / "report", snakefile=REPO / "Snakefile", renderer="pandoc", pdf=False,
    )
    html = (out / "index.html").read_text()
    assert not re.search(r"<img[^>]*onerror", html)  # no tag was injected
    assert "onerror=alert(1)" in html and "onerror=alert(2)" in html and "onerror=alert(3)" in html  # shown as text
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<h1>injected" not in html and ">injected</h" not in html
    qmd = (out / "slides.qmd").read_text()
    assert "\n# injected" not in qmd and not re.search(r"^# injected", qmd, re.M)


def test_quarto_source_escapes_shortcodes_in_text_and_code(built, tables, figures, tmp_path):
    """Quarto expands {{< ... >}} before pandoc reads the file, inside code too; none may survive from a value."""
    from gwlora.deck import deck_context, fill_template

    hostile_tables, config = hostile_copy(tables, tmp_path)
    context = deck_context(hostile_tables, figures, config, "quarto", REPO / "Snakefile")
    qmd = fill_template(REPO / "report" / "slides.qmd", context, "quarto")
    assert qmd.count("{{{< include /etc/hostname >}}}") >= 2  # in code spans: the experiment, the model source
    assert "\\{\\{\\< include \\/etc\\/hostname \\>\\}\\}" in qmd  # in text: the processor
    assert not re.search(r"(?<!\{)\{\{<", qmd)  # every opener is escaped: {{{< in code, \{\{\< in text


def test_markdown_escape_round_trips_through_pandoc():
    """What escape() makes, pandoc reads back as the same literal text."""
    import json
    import subprocess

    from gwlora.deck import pandoc_path
    from gwlora.markdown import code_block, code_span, escape

    values = ["a*b*_c_ `d` [e](f) <g> &amp; $h$ ^i^ ~j~ @k {#l} | m \\ n -- o...", "```", "`x`"]
    for value in values:
        doc = f"{escape(value)}\n\n{code_span(value, quarto=False)}\n\n{code_block(value, 'yaml', quarto=False)}\n"
        ast = json.loads(subprocess.run([pandoc_path(), "-f", "markdown", "-t", "json"], input=doc, capture_output=True, text=True, check=True).stdout)
        para, span, block = ast["blocks"]
        text = "".join(" " if i["t"] == "Space" else i.get("c", "") if isinstance(i.get("c"), str) else "" for i in para["c"])
        assert text == value
        assert span["c"][0]["c"][1] == value
        assert block["c"][1] == value


def test_latex_table_escapes_names_from_the_config():
    from gwlora.aggregate import latex_text

    assert latex_text("lora_x&y 5% $#{}~^\\ ±") == r"lora\_x\&y 5\% \$\#\{\}\textasciitilde{}\textasciicircum{}\textbackslash{} $\pm$"


def pptx_problems(path) -> list[str]:
    """Slides without a title, and text boxes whose text (estimated from its font sizes) is taller than the box."""
    import math

    from pptx import Presentation
    from pptx.util import Emu

    problems = []
    for number, slide in enumerate(Presentation(path).slides, 1):
        title = slide.shapes.title.text.strip() if slide.shapes.title is not None else ""
        if not title:
            problems.append(f"slide {number}: no title")
        for shape in slide.shapes:
            if not shape.has_text_frame or shape == slide.shapes.title:
                continue
            needed = 0.0
            for par in shape.text_frame.paragraphs:
                size = next((r.font.size.pt for r in par.runs if r.font.size), None) or {0: 14, 1: 12.5}.get(par.level, 11)
                mono = any((r.font.name or "").lower().startswith(("courier", "consolas", "menlo")) for r in par.runs)
                per_line = max(1, (Emu(shape.width).pt - 40 - 27 * par.level) / (size * (0.6 if mono else 0.5)))
                # a code block is one paragraph of lines: each line break starts a line
                needed += sum(max(1, math.ceil(len(line) / per_line)) for line in re.split(r"[\v\n]", par.text)) * size * 1.25
            if needed > Emu(shape.height).pt * 1.05:
                problems.append(f"slide {number} ({title!r}): its text needs about {needed:.0f} pt, the box is {Emu(shape.height).pt:.0f} pt")
    return problems


def test_pptx_opens_and_every_slide_has_a_title_and_text_that_fits(deck):
    """python-pptx reads the deck (math in table cells once wrote an undeclared namespace), and nothing runs off a slide."""
    out, _ = deck
    assert pptx_problems(out / "slides.pptx") == []


def test_pptx_renders_one_page_per_slide_in_libreoffice(deck, tmp_path):
    import shutil
    import subprocess

    from pptx import Presentation

    office = shutil.which("soffice") or shutil.which("libreoffice")
    if office is None:
        pytest.skip("LibreOffice is not installed")
    out, _ = deck
    subprocess.run([office, "--headless", "--convert-to", "pdf", "--outdir", str(tmp_path), str(out / "slides.pptx")],
                   check=True, capture_output=True, timeout=300)
    pages = re.findall(rb"/Type\s*/Page\b", (tmp_path / "slides.pdf").read_bytes())
    assert len(pages) == len(Presentation(out / "slides.pptx").slides)


def test_the_deck_prints_the_findings_the_aggregate_stage_wrote(built, tables, figures, tmp_path):
    """The deck judges nothing itself: what findings.json says is what the slides say."""
    import shutil

    copy = tmp_path / "tables"
    shutil.copytree(tables, copy)
    found = json.loads((copy / "findings.json").read_text())
    found["analysis"]["best_variant"] = "variant-from-findings"
    found["setup"]["context"] = "context-from-findings"
    (copy / "findings.json").write_text(json.dumps(found))
    build_deck(tables_dir=copy, figures_dir=figures, config=built["config"], out_dir=tmp_path / "slides", source_dir=REPO / "report",
               snakefile=REPO / "Snakefile", renderer="pandoc")
    html = (tmp_path / "slides" / "index.html").read_text()
    assert "<strong>variant-from-findings</strong>" in html and "Context: context-from-findings;" in html
