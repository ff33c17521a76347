"""aggregate -> plot -> deck on real (tiny) runs."""

import re

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from gwlora.aggregate import aggregate
from gwlora.cli import StageError
from gwlora.config import expand_variants
from gwlora.deck import OUTLINE, build_deck
from gwlora.plot import make_figures
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


@pytest.fixture(scope="module")
def tables(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("tables")
    aggregate(list(reversed(runs)), out)
    return out


def test_summary_orders_variants_and_averages_seeds(runs, tables):
    summary = pd.read_csv(tables / "summary.csv")
    assert list(summary.variant) == ["full", "frozen", "lora-r2"]
    runs_df = pd.read_csv(tables / "runs.csv")
    frozen = runs_df[runs_df.variant == "frozen"]
    row = summary.set_index("variant").loc["frozen"]
    assert row.seeds == 2
    assert row.best_val_auc == pytest.approx(frozen.best_val_auc.mean())
    assert row.best_val_auc_std == pytest.approx(frozen.best_val_auc.std())
    assert summary.set_index("variant").loc["full", "trainable_vs_full_percent"] == pytest.approx(100)
    n = 2
    half = 12.706 * frozen.best_val_auc.std() / n**0.5  # t(0.975, 1 dof)
    assert row.best_val_auc_ci95 == pytest.approx(half, rel=1e-3)
    assert np.isnan(summary.set_index("variant").loc["full", "best_val_auc_ci95"])  # one seed: no interval
    md = (tables / "summary.md").read_text()
    assert md.count("\n") == 2 + 3 and "±" in md  # header, rule, three variants; spread shown for 2 seeds


def test_latex_and_seed_shaped_tables(tables):
    tex = (tables / "summary.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and tex.count("\\\\") == 4  # header + 3 variants
    assert "frozen" in tex and "$\\pm$" in tex and "100.00\\%" in tex
    seed = (tables / "seed_table.md").read_text().splitlines()
    assert [c.strip() for c in seed[0].strip("|").split("|")] == [
        "variant", "seeds", "trainable params", "% of full", "peak memory (MB)", "best val AUC", "best val loss",
    ]
    assert len(seed) == 2 + 3


def test_curves_table_holds_every_evaluation(runs, tables):
    curves = pd.read_csv(tables / "curves.csv")
    assert len(curves) == 4 * 2 and set(curves.variant) == {"full", "frozen", "lora-r2"}


def test_aggregate_rejects_unfinished_run(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(StageError, match="no summary.json"):
        aggregate([tmp_path / "run"], tmp_path / "tables")


def test_figures_are_written(tables, tmp_path):
    paths = make_figures(tables / "curves.csv", tmp_path, tables / "runs.csv")
    assert sorted(p.name for p in paths) == sorted(
        f"{stem}.{fmt}"
        for stem in ("val_auc_vs_time", "val_loss_vs_time", "test_auc_vs_parameters", "costs", "val_auc_vs_rank", "latency")
        for fmt in ("png", "svg")
    )
    assert all(p.stat().st_size > 5000 for p in paths)


@pytest.fixture(scope="module")
def deck(built, tables, tmp_path_factory):
    figures = tmp_path_factory.mktemp("figures")
    make_figures(tables / "curves.csv", figures, tables / "runs.csv")
    out = tmp_path_factory.mktemp("deck") / "slides"
    record = build_deck(
        tables_dir=tables, figures_dir=figures, model_dir=built["root"] / "base_model",
        data_dirs=[built["root"] / "data" / s for s in ("train", "val", "test")],
        config=built["config"], out_dir=out, source_dir=REPO / "report", renderer="pandoc",
    )
    return out, record


def test_fallback_deck_has_every_section_and_is_self_contained(deck):
    out, record = deck
    html = (out / "index.html").read_text()
    assert record["renderer"] == "pandoc"
    headings = re.findall(r'<section[^>]*class="[^"]*level1[^"]*"[^>]*>\s*<h1>(.*?)</h1>', html)
    assert headings == list(OUTLINE)
    assert html.count('src="data:image/png;base64,') == 6  # every figure embedded
    assert not re.search(r'(src|href)="https?://', html)  # nothing fetched at view time
    assert "<math" in html  # maths as MathML, rendered offline
    assert "Hu, Edward J." in html or "Hu, E. J." in html  # the bibliography was rendered


def test_slide_numbers_come_from_the_tables(deck, tables):
    out, _ = deck
    html = (out / "index.html").read_text()
    summary = pd.read_csv(tables / "summary.csv").set_index("variant")
    best = summary.best_val_auc.idxmax()
    assert f"<strong>{best}</strong> ({summary.best_val_auc.max():.4f})" in html
    assert f"{summary.loc['full', 'best_val_loss']:.4f}" in html
    assert ">Results: quality</h2>" in html and ">Results: costs</h2>" in html
    assert f"{summary.loc['lora-r2', 'step_time_ms']:,.1f}" in html  # the cost table
    assert "Demo run" in html  # a random-initialised encoder is labelled as such


def test_template_with_unknown_value_fails_naming_it(built, tables, tmp_path):
    source = tmp_path / "report"
    source.mkdir()
    (source / "slides.qmd").write_text("# Intro\n\n{{ no_such_value }}\n")
    with pytest.raises(StageError, match="no_such_value"):
        build_deck(
            tables_dir=tables, figures_dir=tmp_path, model_dir=built["root"] / "base_model",
            data_dirs=[built["root"] / "data" / s for s in ("train", "val", "test")],
            config=built["config"], out_dir=tmp_path / "slides", source_dir=source, renderer="pandoc",
        )
    assert not (tmp_path / "slides").exists()


def test_lora_families_are_listed_together():
    from gwlora.aggregate import variant_sort_key

    names = {("lora-rs", 2): "lora-rs-r2", ("lora", 8): "lora-r8", ("lora-rs", 8): "lora-rs-r8", ("lora", 2): "lora-r2"}
    ordered = sorted(names, key=lambda k: variant_sort_key("lora", k[0], k[1], None))
    assert [names[k] for k in ordered] == ["lora-r2", "lora-r8", "lora-rs-r2", "lora-rs-r8"]
