"""The plot stage on tiny synthetic tables: which figures a config produces, and that exactly those are drawn."""

import re

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, assert_figure_drawn, tiny_config, write_toy_features
from gwlora.aggregate import EFFICIENCY_COLUMNS, SHIFT_RUN_COLUMNS
from gwlora.cli import StageError
from gwlora.config import expand_variants
from gwlora.constants import INJECTION_SOURCES
from gwlora.plot import (
    FIGURES, MIN_AUC_SPAN, Canvas, dodge_offsets, figure_names, main, make_figures, pareto_front, plot_curves, plot_efficiency, plot_examples,
    plot_latency, plot_lr_sensitivity, plot_pareto, plot_rank, plot_shift_auc,
)

ALWAYS = ["example_inputs", "val_auc_vs_time", "val_loss_vs_time", "test_auc_vs_parameters", "costs", "lr_sensitivity", "pareto"]
AUDIO = {"source": "audiofolder", "audiofolder": {"path": "clips", "positive_class": "tone"}, "splits": {"train": 8, "val": 4, "test": 4}}

NO_TEST_SETS = {"evaluation": {"test_sets": {}}}
CONFIGS = {
    "demo": ({}, ALWAYS + ["val_auc_vs_rank", "latency", "auc_vs_snr", "efficiency", "shift_auc"]),
    "no-lora": ({"train__variants": {"full": {"lr": 1e-4}, "frozen": {"lr": 1e-3}}}, ALWAYS + ["auc_vs_snr", "efficiency", "shift_auc"]),
    "frozen-only": ({"train__variants": {"frozen": {"lr": 1e-3}}, **NO_TEST_SETS}, ALWAYS + ["auc_vs_snr", "efficiency"]),
    "no-latency": ({"train__latency_batches": 0}, ALWAYS + ["val_auc_vs_rank", "auc_vs_snr", "efficiency", "shift_auc"]),
    "audio-folder": ({"data": AUDIO, "train__variants": {"frozen": {"lr": 1e-3}, "lora": {"ranks": [2], "lr": 5e-4}}, **NO_TEST_SETS},
                     ALWAYS + ["val_auc_vs_rank", "latency"]),
    "audio-no-lora": ({"data": AUDIO, "train__variants": {"frozen": {"lr": 1e-3}}, **NO_TEST_SETS}, ALWAYS),
}


@pytest.mark.parametrize("shape", CONFIGS)
def test_figure_names_follow_the_config(shape):
    overrides, expected = CONFIGS[shape]
    assert figure_names(tiny_config(**overrides)) == expected


def test_figure_names_lists_in_drawing_order():
    # the demo draws every figure the stage knows but the context axis's, which needs model.context to list contexts
    assert figure_names(tiny_config()) == [name for name in FIGURES if name != "context_auc_vs_cost"]


def synthetic_tables(config: dict, root, lr_factors=(1.0, 3.0)) -> dict:
    """curves.csv, runs.csv, summary.csv and auc_by_snr.csv shaped as the aggregate stage writes them for `config`.

    Two seeds at each lr of the grid (the variant's lr times each of `lr_factors`); the selected lr is the
    one with the higher mean validation AUC, and summary.csv holds one row per variant at it (the
    last variant with one seed's NaN interval).
    """
    rng = np.random.default_rng(0)
    variants = expand_variants(config["train"])
    latency = config["train"]["latency_batches"] > 0
    injections = config["data"]["source"] in INJECTION_SOURCES
    test_sets = ["test", *config["evaluation"]["test_sets"]]
    curves, runs, snr, shift, eff = [], [], [], [], []
    for i, (name, v) in enumerate(variants.items()):
        selected = v.lr * lr_factors[i % len(lr_factors)]  # the grid's best lr differs between variants
        for lr in (v.lr * f for f in lr_factors):
            for seed in (0, 1):
                if lr == selected:
                    for step in (8, 16, 24):
                        curves.append({"variant": name, "seed": seed, "step": step, "epoch": step / 8, "train_time_s": step * (1 + i) + seed,
                                       "val_auc": 0.5 + step / 100 + rng.uniform(0, 0.05), "val_loss": 0.7 - step / 100})
                lora = v.family == "lora"
                bonus = 0.05 if lr == selected else 0.0
                runs.append({"variant": name, "seed": seed, "family": v.family, "config_key": v.config_key, "rank": v.params.get("rank"), "lr": lr,
                             "selected": lr == selected, "trainable_parameters": 1000 * (i + 1),
                             "val_auc": 0.7 + 0.01 * i + 0.01 * seed + bonus, "best_val_loss": 0.6 - 0.01 * i - bonus + 0.005 * seed,
                             "test_auc": 0.7 + 0.01 * i + bonus - 0.005 * seed, "peak_memory_mb": 100.0 + i, "step_time_ms": 10.0 + i,
                             "latency_base_ms": 5.0 if latency else np.nan, "latency_batch": 16,
                             "latency_unmerged_ms": 6.0 if latency and lora else np.nan,
                             "latency_merged_ms": 5.1 if latency and lora else np.nan})
                for k, name_of_set in enumerate(test_sets):
                    shift.append({"test_set": name_of_set, "variant": name, "lr": lr, "seed": seed, "selected": lr == selected,
                                  "auc": 0.9 - 0.2 * k - 0.01 * i, "tpr_at_fpr": 0.5, "accuracy": 0.8, "brier": 0.2, "one_class": False,
                                  "did_not_learn": False})
                    for b in range(3) if injections and lr == selected and seed == 0 else ():
                        eff.append({"test_set": name_of_set, "variant": name, "snr_bin": b, "snr_low": 4.0 + b, "snr_high": 5.0 + b,
                                    "snr_median": 4.5 + b, "n_signal": 10, "seeds": 2, "threshold_fpr": 0.01, "efficiency": 0.2 + 0.3 * b,
                                    "ci_low": 0.1 + 0.3 * b, "ci_high": 0.3 + 0.3 * b})
                for b in range(4) if injections and lr == selected else ():
                    snr.append({"variant": name, "seed": seed, "snr_bin": b, "snr_low": 5.0 + b, "snr_high": 6.0 + b, "snr_median": 5.5 + b,
                                "n_signal": 4, "n_noise": 16, "auc": 0.6 + 0.1 * b})
    table = pd.DataFrame(runs)
    chosen = table[table.selected].groupby(["variant", "family", "config_key", "rank", "lr"], sort=False, dropna=False)
    summary = chosen.agg(seeds=("seed", "nunique"), trainable_parameters=("trainable_parameters", "mean"),
                         peak_memory_mb=("peak_memory_mb", "mean"), step_time_ms=("step_time_ms", "mean"), val_auc=("val_auc", "mean"),
                         test_auc=("test_auc", "mean"), test_auc_std=("test_auc", "std")).reset_index()
    summary["test_auc_ci95"] = 2.0 * summary.test_auc_std
    summary.loc[summary.index[-1], ["test_auc_std", "test_auc_ci95"]] = np.nan  # as with one seed: no interval
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    columns = {"auc_by_snr": ["variant", "seed", "snr_bin", "snr_low", "snr_high", "snr_median", "n_signal", "n_noise", "auc"],
               "shift_runs": SHIFT_RUN_COLUMNS, "efficiency": EFFICIENCY_COLUMNS}
    for key, rows in (("curves", curves), ("runs", runs), ("summary", summary), ("auc_by_snr", snr), ("shift_runs", shift), ("efficiency", eff)):
        paths[key] = root / f"{key}.csv"
        pd.DataFrame(rows, columns=columns.get(key)).to_csv(paths[key], index=False)
    selected = pd.DataFrame(shift, columns=SHIFT_RUN_COLUMNS)
    shift_table = selected[selected.selected].groupby(["test_set", "variant"], sort=False).agg(auc=("auc", "mean"), did_not_learn=("did_not_learn", "sum"))
    shift_table = shift_table.reset_index().assign(auc_ci_low=lambda t: t.auc - 0.03, auc_ci_high=lambda t: t.auc + 0.02)
    paths["shift"] = root / "shift.csv"
    shift_table.to_csv(paths["shift"], index=False)
    paths["examples"] = write_toy_features(root, {"test": 8})["test"]
    return paths


def draw(paths: dict, out, names) -> list:
    """make_figures on every table of `paths`, drawing `names`."""
    return make_figures(paths["curves"], out, paths["runs"], paths["auc_by_snr"], paths["examples"], figures=names, summary_csv=paths["summary"],
                        shift_runs_csv=paths["shift_runs"], efficiency_csv=paths["efficiency"], shift_csv=paths.get("shift"))


def files_of(names) -> list[str]:
    return sorted(f"{name}.{fmt}" for name in names for fmt in ("png", "svg"))


@pytest.mark.parametrize("shape", ["demo", "no-lora", "no-latency", "audio-no-lora"])
def test_make_figures_writes_exactly_the_listed_figures(shape, tmp_path):
    config = tiny_config(**CONFIGS[shape][0])
    paths = synthetic_tables(config, tmp_path / "tables")
    names = figure_names(config)
    out = tmp_path / "figures"
    written = draw(paths, out, names)
    assert [p.name for p in written] == [f"{name}.{fmt}" for name in names for fmt in ("png", "svg")]
    assert sorted(p.name for p in out.iterdir()) == files_of(names)  # no other file, no temporary left behind
    for path in written:
        assert_figure_drawn(path)


def test_make_figures_draws_only_a_subset_when_asked(tmp_path):
    paths = synthetic_tables(tiny_config(), tmp_path / "tables")
    written = make_figures(paths["curves"], tmp_path / "figures", paths["runs"], figures=["costs", "val_auc_vs_time"])
    assert [p.name for p in written] == files_of(["costs"]) + files_of(["val_auc_vs_time"])
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == files_of(["costs", "val_auc_vs_time"])


@pytest.mark.parametrize(
    "shape, figure, message",
    [
        ("no-lora", "val_auc_vs_rank", "no LoRA run"),
        ("no-lora", "latency", "no run of a method that adds to the model"),
        ("no-latency", "latency", "measured its inference latency"),
        ("audio-folder", "auc_vs_snr", r"auc_by_snr.csv .* has no rows"),
    ],
)
def test_a_listed_figure_the_data_cannot_support_is_named(shape, figure, message, tmp_path):
    """A config and its results that disagree stop the stage: nothing is skipped silently."""
    paths = synthetic_tables(tiny_config(**CONFIGS[shape][0]), tmp_path / "tables")
    with pytest.raises(StageError, match=rf"cannot draw figure '{figure}': .*{message}"):
        draw(paths, tmp_path / "figures", ["costs", figure])


def test_a_figure_without_its_input_or_unknown_is_named(tmp_path):
    paths = synthetic_tables(tiny_config(), tmp_path / "tables")
    with pytest.raises(StageError, match=r"figure 'auc_vs_snr' is drawn from auc_by_snr.csv .*not given"):
        make_figures(paths["curves"], tmp_path / "figures", paths["runs"], figures=["costs", "auc_vs_snr"])
    with pytest.raises(StageError, match=r"figure 'pareto' is drawn from summary.csv \(summary_csv, --summary\), which was not given"):
        draw({**paths, "summary": None}, tmp_path / "figures", ["costs", "pareto"])
    with pytest.raises(StageError, match=r"unknown figures \['violin'\]"):
        make_figures(paths["curves"], tmp_path / "figures", figures=["violin"])
    assert not (tmp_path / "figures").exists()  # checked before anything is drawn


def test_a_variant_has_one_colour_in_every_figure(tmp_path):
    """The canvas's palette covers every table's variants; the curves and the rank figure agree on it."""
    paths = synthetic_tables(tiny_config(), tmp_path / "tables")
    curves, runs = pd.read_csv(paths["curves"]), pd.read_csv(paths["runs"])
    canvas = Canvas(tmp_path, [*curves.variant[curves.variant != "frozen"], *runs.variant])  # frozen only in runs
    assert list(canvas.palette) == [v for v in expand_variants(tiny_config()["train"]) if v != "frozen"] + ["frozen"]
    lines = {line.get_label(): line.get_color() for line in plot_curves(curves, canvas, "val_auc").axes[0].lines}
    rank = {line.get_label(): line.get_color() for line in plot_rank(runs, canvas).axes[0].lines}
    assert lines["frozen"] == pytest.approx(canvas.palette["frozen"]) and rank["frozen"] == pytest.approx(canvas.palette["frozen"])
    assert rank["lora"] == pytest.approx(canvas.palette["lora-r8"])  # the family's line: its last rank's colour


@pytest.mark.parametrize(
    "costs, quality, front",
    [
        ([1.0], [0.7], [True]),  # a single point is its own front
        ([1.0, 2.0, 3.0], [0.6, 0.8, 0.7], [True, True, False]),  # 3 costs more than 2 for less
        ([1.0, 2.0], [0.8, 0.8], [True, False]),  # equal quality at a higher cost: dominated
        ([1.0, 1.0], [0.7, 0.8], [False, True]),  # equal cost, lower quality: dominated
        ([1.0, 1.0, 2.0], [0.8, 0.8, 0.9], [True, True, True]),  # identical points do not dominate each other
        ([3.0, 1.0, 2.0], [0.9, 0.7, 0.95], [False, True, True]),  # order does not matter
        ([1.0, np.nan, 2.0], [0.7, 0.99, np.nan], [True, False, False]),  # unmeasured: never on the front, dominates nothing
        ([], [], []),
    ],
)
def test_pareto_front(costs, quality, front):
    mask = pareto_front(costs, quality)
    assert mask.dtype == bool and mask.tolist() == front


def test_pareto_front_needs_matching_vectors():
    with pytest.raises(ValueError, match="1-D and of one length"):
        pareto_front([1.0, 2.0], [0.5])


def test_pareto_figure_marks_intervals_and_front(tmp_path):
    """One point per variant with its 95% interval (none where NaN), labelled, and the front as a step line in each panel."""
    paths = synthetic_tables(tiny_config(), tmp_path / "tables")
    summary = pd.read_csv(paths["summary"])
    canvas = Canvas(tmp_path, summary.variant)
    fig = plot_pareto(summary, canvas)
    assert len(fig.axes) == 3 and fig.axes[0].get_xscale() == "log"
    for ax in fig.axes:
        assert [t.get_text() for t in ax.texts] == list(summary.variant)
        bars = [c for c in ax.containers if c.has_yerr]
        assert len(bars) == len(summary) - 1  # the last variant: NaN interval, no bar
        step = next(line for line in ax.lines if line.get_label() == "Pareto front")
        # costs grow with the variant's index and so does test AUC (at the selected lr): every variant is on the front
        assert len(step.get_xdata()) == len(summary)


def test_a_variant_that_did_not_learn_is_on_no_pareto_front_and_the_bars_are_the_test_windows_intervals(tmp_path):
    """The best-looking variant had a run that did not learn: it is left out (and named so), the front is drawn from the rest."""
    paths = synthetic_tables(tiny_config(), tmp_path / "tables")
    summary = pd.read_csv(paths["summary"]).assign(did_not_learn=0)
    flagged = summary.variant.iloc[-1]  # the highest test AUC
    summary.loc[summary.index[-1], "did_not_learn"] = 1
    fig = plot_pareto(summary, Canvas(tmp_path, summary.variant), shift=pd.read_csv(paths["shift"]))
    for ax in fig.axes:
        labels = [c.get_label() for c in ax.containers]
        assert flagged not in labels and len(labels) == len(summary) - 1
        assert all(c.has_yerr for c in ax.containers)  # shift.csv's bootstrap intervals: one for every variant, one seed or many
        assert flagged not in [t.get_text() for t in ax.texts]
    assert f"left out, as they did not learn: {flagged}" in fig._suptitle.get_text() and "bootstrap over test windows" in fig._suptitle.get_text()


def test_a_step_time_on_cached_encoder_outputs_leads_no_front_and_is_marked(tmp_path):
    """The frozen encoder trains on cached encoder outputs (0.8 ms against full fine-tuning's 62 ms in the demo): its step
    time is another measurement, so it is hollow and on no front in the step-time panel, on the front elsewhere as before."""
    from gwlora.plot import CACHED_NOTE, plot_costs

    paths = synthetic_tables(tiny_config(), tmp_path / "tables")
    summary = pd.read_csv(paths["summary"])
    first = summary.variant.iloc[0]  # the cheapest: on every front
    summary = summary.assign(encoder_cache_used=summary.variant == first)
    fig = plot_pareto(summary, Canvas(tmp_path, summary.variant))
    for ax, cost in zip(fig.axes, ("trainable_parameters", "peak_memory_mb", "step_time_ms")):
        front = next(line for line in ax.lines if line.get_label() == "Pareto front")
        point = next(c for c in ax.containers if c.get_label() == first)
        assert (cost == "step_time_ms") == (point.lines[0].get_markerfacecolor() == "none")
        assert (cost == "step_time_ms") == (summary.loc[summary.variant == first, cost].iloc[0] not in front.get_xdata())
    assert f"{first} {CACHED_NOTE}" in " ".join(fig._suptitle.get_text().split())  # wrapped to the figure's width
    runs = pd.read_csv(paths["runs"]).assign(encoder_cache_used=lambda r: r.variant == first)
    costs = plot_costs(runs, Canvas(tmp_path, runs.variant))
    hatched = [bar.get_hatch() for bar in costs.axes[1].patches]
    assert hatched[0] == "//" and not any(hatched[1:]) and CACHED_NOTE in " ".join(costs._suptitle.get_text().split())
    assert max(map(len, costs._suptitle.get_text().splitlines())) <= 90 and max(map(len, fig._suptitle.get_text().splitlines())) <= 130


def test_with_no_variant_that_learned_the_pareto_figure_draws_no_front(tmp_path):
    paths = synthetic_tables(tiny_config(), tmp_path / "tables")
    summary = pd.read_csv(paths["summary"]).assign(did_not_learn=1)
    fig = plot_pareto(summary, Canvas(tmp_path, summary.variant))
    assert all(line.get_label() != "Pareto front" for ax in fig.axes for line in ax.lines)
    assert "no variant learned" in fig._suptitle.get_text()


def test_shifted_set_bars_rise_from_chance_with_their_intervals(tmp_path):
    paths = synthetic_tables(tiny_config(), tmp_path / "tables")
    rows = pd.read_csv(paths["shift_runs"])
    fig = plot_shift_auc(rows, Canvas(tmp_path, rows.variant), shift=pd.read_csv(paths["shift"]))
    ax = fig.axes[0]
    assert ax.get_ylim() == (0.0, 1.0)
    bars = [patch for patch in ax.patches]
    assert bars and all(patch.get_y() == 0.5 for patch in bars)  # from chance, never from 0.45
    assert sum(getattr(c, "has_yerr", False) for c in ax.containers) == len(bars)
    fig.canvas.draw()
    title = ax.title.get_window_extent()
    assert fig.bbox.x0 <= title.x0 and title.x1 <= fig.bbox.x1  # not clipped


def test_efficiency_intervals_of_nine_variants_stay_apart(tmp_path):
    variants = [f"v{i}" for i in range(9)]
    eff = pd.DataFrame([{"test_set": "test", "variant": v, "snr_median": 4.5 + 2 * b, "efficiency": 0.5, "ci_low": 0.4, "ci_high": 0.6,
                         "threshold_fpr": 0.01} for v in variants for b in range(3)])
    offsets = dodge_offsets(9, eff.snr_median)
    assert len(set(np.round(offsets, 6))) == 9 and offsets.max() - offsets.min() < 2.0  # apart, and inside their bin
    ax = plot_efficiency(eff, Canvas(tmp_path, variants)).axes[0]
    xs = sorted(x for line in ax.lines if line.get_marker() == "o" for x in line.get_xdata()[:1])
    assert len(xs) == 9 and min(np.diff(xs)) > 0.1


def test_the_rank_axis_does_not_magnify_a_tiny_gap(tmp_path):
    """Ranks 0.0002 apart in validation AUC: the axis spans at least MIN_AUC_SPAN, so no trend is drawn from the gap."""
    runs = pd.DataFrame([{"variant": f"lora-r{r}", "family": "lora", "config_key": "lora", "rank": r, "val_auc": 0.9 + 0.0001 * k, "seed": 0}
                         for k, r in enumerate((2, 4, 8))])
    ax = plot_rank(runs, Canvas(tmp_path, runs.variant)).axes[0]
    low, high = ax.get_ylim()
    assert high - low >= MIN_AUC_SPAN and "lowest val loss" in ax.get_ylabel() and "best" not in ax.get_ylabel()


def test_the_latency_figure_states_its_batch_and_the_passes_spread(tmp_path):
    runs = pd.DataFrame([{"variant": "lora-r4", "family": "lora", "latency_batch": 16, "latency_base_ms": 5.0, "latency_unmerged_ms": 6.0,
                          "latency_merged_ms": 5.1, **{f"latency_{m}_{q}_ms": v for m in ("base", "unmerged", "merged")
                                                       for q, v in (("q25", 4.8), ("q75", 6.3))}}])
    fig = plot_latency(runs, Canvas(tmp_path, runs.variant))
    ax = fig.axes[0]
    assert "batch of 16 windows" in ax.get_title() and sum(getattr(c, "has_yerr", False) for c in ax.containers) == 3
    fig.canvas.draw()
    title = ax.title.get_window_extent()
    assert fig.bbox.x0 <= title.x0 and title.x1 <= fig.bbox.x1  # not clipped


def test_the_example_figure_marks_the_chirp_of_the_loudest_injection(tmp_path):
    features = write_toy_features(tmp_path, {"test": 8})["test"]
    fig = plot_examples(features, Canvas(tmp_path, []))
    axes = np.array(fig.axes).reshape(3, -1)
    assert "network SNR" in axes[0, 0].get_title() and "minus the median" in axes[1, 0].get_title()
    assert "what to look for" in fig._suptitle.get_text()
    assert all(ax.collections for ax in axes[1])  # the track's circles on every channel's excess panel


@pytest.mark.parametrize("selection, column, label", [("val_loss", "best_val_loss", "validation loss"), ("val_auc", "val_auc", "validation AUC")])
def test_lr_sensitivity_rings_the_selected_lr_on_the_metric_that_selected_it(selection, column, label, tmp_path):
    """The panel that marks the selected lr plots train.lr_selection's metric (it plotted val AUC while val loss selected)."""
    paths = synthetic_tables(tiny_config(), tmp_path / "tables")
    runs = pd.read_csv(paths["runs"])
    canvas = Canvas(tmp_path, runs.variant)
    fig = plot_lr_sensitivity(runs, canvas, selection)
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "log"]
    assert "selected on validation" in fig.get_suptitle() and fig.get_suptitle().startswith(label.capitalize())
    assert fig.axes[0].get_ylabel().startswith(label) and "selects the lr" in fig.axes[0].get_ylabel()
    selected = runs[runs.selected].groupby("variant", sort=False)
    rings = [c for c in fig.axes[0].collections if c.get_sizes()[0] == 300]
    np.testing.assert_allclose(np.vstack([r.get_offsets() for r in rings]), np.column_stack([selected.lr.first(), selected[column].mean()]))
    np.testing.assert_allclose(np.vstack([r.get_edgecolor()[:, :3] for r in rings]), [canvas.palette[v] for v in selected.lr.first().index])


def test_lr_sensitivity_with_one_lr_per_variant(tmp_path):
    paths = synthetic_tables(tiny_config(), tmp_path / "tables", lr_factors=(1.0,))
    written = draw(paths, tmp_path / "figures", ["lr_sensitivity", "pareto"])
    assert [p.name for p in written] == files_of(["lr_sensitivity"]) + files_of(["pareto"])


@pytest.mark.parametrize("mark, message", [("none", r"none for \['full'\]"), ("all", r"several for \['full'\]")])
def test_lr_sensitivity_needs_one_selected_lr_per_variant(mark, message, tmp_path):
    paths = synthetic_tables(tiny_config(), tmp_path / "tables")
    runs = pd.read_csv(paths["runs"])
    runs.loc[runs.variant == "full", "selected"] = mark == "all"
    runs.to_csv(paths["runs"], index=False)
    with pytest.raises(StageError, match=rf"cannot draw figure 'lr_sensitivity': .*one selected lr per variant: {message}"):
        draw(paths, tmp_path / "figures", ["lr_sensitivity"])


def test_cli_draws_the_figures_it_is_given(tmp_path):
    paths = synthetic_tables(tiny_config(), tmp_path / "tables")
    out = tmp_path / "figures"
    args = ["--curves", str(paths["curves"]), "--runs", str(paths["runs"]), "--summary", str(paths["summary"]), "--out", str(out)]
    assert main(["--figures", "val_loss_vs_time", "val_auc_vs_rank", "pareto", *args]) == 0
    assert sorted(p.name for p in out.iterdir()) == files_of(["val_loss_vs_time", "val_auc_vs_rank", "pareto"])
    with pytest.raises(SystemExit):
        main(["--figures", "violin", *args])  # argparse: not one of the figures
    with pytest.raises(SystemExit):
        main(args)  # --figures is required: the stage never decides for itself


def planned_plot_job(config: dict, tmp_path) -> tuple[list[str], list[str]]:
    """The plot rule's declared outputs and its --figures, from a Snakemake dry run of `config`."""
    from test_workflow import snakemake, workflow_copy

    root = workflow_copy(tmp_path)
    (root / "plan.yaml").write_text(yaml.safe_dump(config))
    out = snakemake(root, "-n", "-p", "--cores", "1", "--configfile", "plan.yaml").stdout
    outputs = re.search(r"^rule plot:\n(?:    .*\n)*?    output: (.*)$", out, re.M).group(1).split(", ")
    figures = re.search(r"python -m gwlora\.plot --figures (.*?) --", out).group(1).split()
    return outputs, figures


@pytest.mark.parametrize("shape", ["no-lora", "no-latency"])
def test_the_rule_declares_and_passes_figure_names(shape, tmp_path):
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    for key, value in CONFIGS[shape][0].items():
        section, _, name = key.partition("__")
        config[section][name] = value
    outputs, figures = planned_plot_job(config, tmp_path)
    expected = figure_names(tiny_config(**CONFIGS[shape][0]))
    assert figures == expected
    assert sorted(o.rsplit("/", 1)[1] for o in outputs) == files_of(expected)


@pytest.fixture(scope="module")
def whitened_log_mels():
    """The demo's data as the model sees it: simulated windows, whitened and band-passed by gwlora.dataset (LALSuite
    injections at the demo's loudest SNR, 15), turned into log-mels by gwlora.features; (signal [window, channel, mel,
    frame], noise likewise, each signal's merger frame)."""
    import copy

    from transformers import WhisperFeatureExtractor

    from shape_decks import demo_config
    from gwlora.constants import WHISPER_FRAMES_PER_SECOND
    from gwlora.dataset import simulated_window
    from gwlora.features import extract

    data = copy.deepcopy(demo_config()["data"])
    data["snr"] = {"min": 15.0, "max": 15.0}
    signals = [simulated_window(data, 0, "test", i, 1) for i in range(3)]
    noise = [simulated_window(data, 0, "test", 100 + i, 0) for i in range(24)]
    extractor = WhisperFeatureExtractor(feature_size=80)
    extractor.n_samples = np.asarray(signals[0]["strain"]).shape[-1]
    extractor.nb_max_frames = extractor.n_samples // extractor.hop_length
    def mels(rows):
        return extract(np.stack([np.asarray(r["strain"]) for r in rows]), extractor)
    mergers = [round(r["merger_time"] * WHISPER_FRAMES_PER_SECOND) for r in signals]
    return mels(signals), mels(noise), mergers


def test_the_example_figure_keeps_the_bins_that_hold_power_and_marks_the_chirp_at_its_merger(whitened_log_mels):
    """On the demo's features the black floor (about -0.41) once sat above min + 1e-3, so all 80 bins were kept, and the
    track marked 92 to 100 of 100 frames. The floor is now the bins at their window's floor in most frames; a mark is a
    frame whose excess noise windows' frames reach 1 time in 1000, so the marks cluster just before the merger."""
    from gwlora.plot import active_bins, excess_track

    signal, noise, mergers = whitened_log_mels
    for channel in (0, 1):
        top = active_bins(noise[:, channel])
        assert 20 <= top <= 60  # the strain's band (20-1000 Hz) fills the lowest bins of a 16 kHz mel scale, not all 80
        assert (noise[:, channel, top:] <= noise[:, channel].min(axis=(1, 2))[:, None, None] + 1e-6).mean() > 0.8
    offsets = []  # each mark's frame from its window's merger, both channels
    for window, merger in enumerate(mergers):
        for channel in (0, 1):
            top = active_bins(noise[:, channel])
            typical = np.median(noise[:, channel, :top], axis=0)
            frames, bins = excess_track(signal[window, channel, :top] - typical, noise[:, channel, :top] - typical)
            offsets += list(frames - merger)
            assert (bins < top).all()
    offsets = np.array(offsets)
    assert len(offsets) >= 6 and np.mean((offsets >= -25) & (offsets <= 5)) >= 0.75, offsets  # in the last quarter second to the merger
    held_out = []  # pure noise, each window against the others: about one frame in a thousand marked
    for window in range(len(noise)):
        rest = np.delete(noise[:, 0], window, axis=0)
        top, typical = active_bins(rest), np.median(rest[:, : active_bins(rest)], axis=0)
        held_out.append(len(excess_track(noise[window, 0, :top] - typical, rest[:, :top] - typical)[0]))
    assert max(held_out) <= 3 and np.mean(held_out) <= 1.0, held_out


def test_the_example_figure_draws_the_track_it_finds(whitened_log_mels, tmp_path):
    from gwlora.features import write_features

    signal, noise, _ = whitened_log_mels
    x = np.concatenate([signal, noise]).astype(np.float32)
    labels = np.r_[np.ones(len(signal)), np.zeros(len(noise))].astype(int)
    write_features(tmp_path / "test", x, labels, np.where(labels == 1, 15.0, 0.0), split="test", channels=["H1", "L1"])
    fig = FIGURES["example_inputs"].draw(tmp_path / "test", Canvas(tmp_path, ["full"]))
    marks = [len(c.get_offsets()) for ax in fig.axes for c in ax.collections]
    assert 0 < sum(marks) <= 40 and "1 time in 1000" in fig._suptitle.get_text()
    assert all(ax.images[0].get_extent()[3] < 80 for ax in fig.axes if ax.images)
