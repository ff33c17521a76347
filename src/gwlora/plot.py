"""Stage `plot`: the presentation's figures from the aggregated tables (seaborn).

Which figures a config produces is decided once, by :func:`figure_names`; the
Snakemake rule declares exactly those files as outputs and passes the same list
to this stage (``--figures``), which draws exactly them:

* always: ``example_inputs`` (the log-mel the encoder sees for the strongest
  signal and for a noise window of the test split), ``val_auc_vs_time`` and
  ``val_loss_vs_time`` (validation AUC and loss against cumulative training
  time), ``test_auc_vs_parameters`` (log axis), ``costs`` (peak memory and
  step time per variant), ``lr_sensitivity`` (the selecting validation metric and test AUC against
  the learning rate, the lr selected on validation marked) and ``pareto`` (test
  AUC at each variant's selected lr against parameters, memory and step time,
  with the Pareto front);
* with LoRA variants: ``val_auc_vs_rank`` (full and frozen as reference lines);
* with a method that adds to the model (LoRA, adapters, prompts, BitFit, peft):
  ``latency`` (base, the method unmerged, and merged where it merges) unless
  ``train.latency_batches`` is 0;
* with injected signals (``data.source`` in ``INJECTION_SOURCES``): ``auc_vs_snr``
  and ``efficiency`` (detection efficiency at the FPR against injected SNR, one
  panel per test set, binomial intervals);
* with shifted test sets (``evaluation.test_sets``): ``shift_auc`` (AUC per test
  set and variant);
* when ``model.context`` lists several contexts: ``context_auc_vs_cost`` (each
  context's paired test-AUC difference to 30 s, with its interval, against its
  step time; from ``context.csv``).

A listed figure that the data cannot support (no LoRA run, no latency measured,
no SNR rows, a table not given) stops the stage with a :class:`StageError`
naming the figure and the reason: the stage never skips a figure silently and
never draws an empty one, so a config and its results that disagree are caught.

Every figure is set up by one :class:`Canvas`: seaborn's theme, the size and
layout, one colour per variant (the same in every figure), and PNG + SVG files
each written atomically. Curves show the mean over seeds at each evaluation,
with a band from the lowest to the highest seed.
"""

from __future__ import annotations

import importlib
import logging
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from .cli import StageError, atomic_file, run_stage
from .config import expand_variants
from .families.matched_filter import NAME as MATCHED_FILTER
from .families import family
from .constants import INJECTION_SOURCES, WHISPER_FRAMES_PER_SECOND

log = logging.getLogger("gwlora.plot")


class _ImportedOnFirstUse:
    """A plotting module imported when first used, with matplotlib's file-only backend (Agg).

    The Snakefile imports this module for :func:`figure_names` on every
    invocation; matplotlib and seaborn would add over a second to each.
    """

    def __init__(self, name: str):
        self._name = name
        self._module = None

    def __getattr__(self, attr):
        if self._module is None:
            import matplotlib

            matplotlib.use("Agg")  # no display: figures go to files
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


plt = _ImportedOnFirstUse("matplotlib.pyplot")
sns = _ImportedOnFirstUse("seaborn")

FORMATS = ("png", "svg")
SIZE = (10, 6)  # inches: every single-panel figure
CURVES = {"val_auc": "validation AUC", "val_loss": "validation loss"}  # the training curves: column -> axis label
LATENCY_MODELS = {"latency_base_ms": "base", "latency_unmerged_ms": "unmerged", "latency_merged_ms": "merged"}
# the learning-rate figure's panels: the metric train.lr_selection selects by (runs.csv column, axis label), then the test
# AUC, which selects nothing
LR_SELECTION_PANELS = {"val_loss": ("best_val_loss", "validation loss, lowest (selects the lr)"),
                       "val_auc": ("val_auc", "validation AUC (selects the lr)")}
LR_TEST_PANEL = ("test_auc", "test AUC (display only)")
# the Pareto figure's costs: column -> (axis label, x scale)
# An AUC axis spans at least this much: about the 95% interval of an AUC on a few hundred windows, so a gap inside it is not drawn as a trend
MIN_AUC_SPAN = 0.05
PARETO_COSTS = {"trainable_parameters": ("trainable parameters", "log"), "peak_memory_mb": ("peak training memory (MiB)", "linear"),
                "step_time_ms": ("step time (ms)", "linear")}


def variant_palette(variants: Sequence[str]) -> dict[str, tuple]:
    """A stable colour per variant, in display order."""
    colours = sns.color_palette("tab10" if len(variants) <= 10 else "husl", len(variants))
    return dict(zip(variants, colours))


class Canvas:
    """The set-up every figure shares: seaborn's theme, the size and layout, one colour per variant, and the files.

    `palette` maps each variant to its colour, the same in every figure.
    :meth:`figure` starts a figure in the shared theme; :meth:`save` writes it
    as PNG and SVG beside each other, each file atomically, and closes it.
    """

    def __init__(self, out_dir: str | Path, variants: Sequence[str]):
        self.out_dir = Path(out_dir)
        self.palette = variant_palette(list(dict.fromkeys(variants)))

    def figure(self, nrows: int = 1, ncols: int = 1, *, size: tuple[float, float] = SIZE, style: str = "whitegrid", **subplots):
        """(figure, axes) in the shared theme; `subplots` goes to :func:`matplotlib.pyplot.subplots` (e.g. squeeze=False)."""
        sns.set_theme(context="talk", style=style)
        return plt.subplots(nrows, ncols, figsize=size, layout="constrained", **subplots)

    def colours(self, variants) -> dict[str, tuple]:
        """The palette restricted to `variants`, in display order (a seaborn `palette` / `hue_order` pair)."""
        present = set(variants)
        return {v: c for v, c in self.palette.items() if v in present}

    def save(self, fig: plt.Figure, name: str) -> list[Path]:
        """Write `fig` as ``<out_dir>/<name>.png`` and ``.svg`` (each atomically) and close it."""
        paths = []
        try:
            for fmt in FORMATS:
                path = self.out_dir / f"{name}.{fmt}"
                with atomic_file(path) as tmp:
                    fig.savefig(tmp, format=fmt, dpi=150)
                paths.append(path)
        finally:
            plt.close(fig)
        return paths


def require(frame: pd.DataFrame, columns, what: str) -> None:
    """Stop unless `frame` has rows and every one of `columns`."""
    missing = set(columns) - set(frame.columns)
    if missing:
        raise StageError(f"{what} lacks the columns {sorted(missing)}")
    if frame.empty:
        raise StageError(f"{what} has no rows")


def lora_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The LoRA rows of the runs table; stop if there are none."""
    lora = runs[runs.family == "lora"]
    if lora.empty:
        raise StageError("runs.csv has no LoRA run (the config lists no LoRA variant?)")
    return lora


def seed_bands(curves: pd.DataFrame, y: str) -> pd.DataFrame:
    """Per variant and evaluation step: mean training time, and the mean, lowest and highest `y` over seeds.

    Every seed of a variant evaluates at the same steps, so steps align the
    seeds' curves even though their wall-clock times differ a little.
    """
    grouped = curves.groupby(["variant", "step"], sort=False)
    return grouped.agg(time=("train_time_s", "mean"), mean=(y, "mean"), low=(y, "min"), high=(y, "max"), seeds=("seed", "nunique")).reset_index()


def plot_curves(curves: pd.DataFrame, canvas: Canvas, y: str) -> plt.Figure:
    """`y` against cumulative training time, one line per variant (mean over seeds, band: lowest to highest seed)."""
    require(curves, ("variant", "seed", "step", "train_time_s", y), "curves.csv")
    ylabel = CURVES[y]
    fig, ax = canvas.figure()
    bands = seed_bands(curves, y)
    for variant, colour in canvas.colours(curves.variant).items():
        rows = bands[bands.variant == variant]
        ax.plot(rows.time, rows["mean"], marker="o", markersize=5, linewidth=2, color=colour, label=variant)
        if rows.seeds.max() > 1:
            ax.fill_between(rows.time, rows.low, rows.high, color=colour, alpha=0.2, linewidth=0)
    ax.set_xlabel("cumulative training time (s)")
    ax.set_ylabel(ylabel)
    n_seeds = curves.groupby("variant").seed.nunique().max()
    title = f"{ylabel[0].upper()}{ylabel[1:]} vs training time"
    ax.set_title(title + (f" (mean of {n_seeds} seeds, band: min to max)" if n_seeds > 1 else ""), fontsize="medium")
    ax.legend(title="variant", loc="best", fontsize="small", title_fontsize="small")
    return fig


def auc_limits(values, spread: float = 0.0) -> tuple[float, float]:
    """y limits of an AUC axis that do not magnify noise: at least MIN_AUC_SPAN, and at least four times `spread` (the widest
    interval half-width or seed-to-seed range of a point shown), around the values' middle, inside 0..1."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if not len(values):
        return 0.0, 1.0
    span = max(values.max() - values.min(), MIN_AUC_SPAN, 4 * (0.0 if np.isnan(spread) else spread))
    span = min(1.0, 1.1 * span)  # a margin around the points
    low = min(max(0.0, (values.max() + values.min() - span) / 2), 1.0 - span)  # centred, shifted inside 0..1
    return low, low + span


def plot_rank(runs: pd.DataFrame, canvas: Canvas) -> plt.Figure:
    """The validation AUC of each run's tested checkpoint (its lowest val loss) against LoRA rank (log2 axis; mean and seeds),
    full and frozen as reference lines, on an axis no narrower than the seeds' spread allows (:func:`auc_limits`)."""
    require(runs, ("variant", "family", "config_key", "rank", "val_auc"), "runs.csv")
    lora = lora_runs(runs)
    fig, ax = canvas.figure()
    for config_key, rows in lora.groupby("config_key", sort=False):
        colour = canvas.palette[rows.variant.iloc[-1]]
        ax.scatter(rows["rank"], rows.val_auc, color=colour, alpha=0.5, s=30)
        means = rows.groupby("rank").val_auc.mean()
        ax.plot(means.index, means.values, marker="o", color=colour, linewidth=2, label=config_key)
    shown = [lora.val_auc]
    for family, style in (("full", "--"), ("frozen", ":")):
        ref = runs[runs.family == family]
        if len(ref):
            ax.axhline(ref.val_auc.mean(), linestyle=style, color=canvas.palette[ref.variant.iloc[0]], linewidth=2, label=family)
            shown.append(pd.Series([ref.val_auc.mean()]))
    spread = lora.groupby("variant").val_auc.agg(lambda v: v.max() - v.min() if len(v) > 1 else np.nan).max()
    ax.set_ylim(*auc_limits(pd.concat(shown), spread))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("LoRA rank r")
    ax.set_ylabel("validation AUC\n(checkpoint of lowest val loss)")
    ax.set_title("Validation AUC vs LoRA rank")
    ax.legend(fontsize="small")
    return fig


def plot_params(runs: pd.DataFrame, canvas: Canvas) -> plt.Figure:
    """Test AUC against trainable parameters (log axis), one colour per variant."""
    require(runs, ("variant", "trainable_parameters", "test_auc"), "runs.csv")
    palette = canvas.colours(runs.variant)
    fig, ax = canvas.figure()
    sns.scatterplot(data=runs, x="trainable_parameters", y="test_auc", hue="variant", hue_order=list(palette), palette=palette, s=120, ax=ax)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("test AUC")
    ax.set_title("Test AUC vs trainable parameters")
    ax.legend(fontsize="x-small", ncol=2)
    return fig


# How a step time measured on cached encoder outputs is drawn: hollow or hatched, never beside the others as a like cost
CACHED_NOTE = "trained on cached encoder outputs (the step skips the frozen encoder): step time not comparable"


def cached_variants(frame: pd.DataFrame) -> set[str]:
    """The variants with a run (a row) that trained on cached encoder outputs; none for a table without the record."""
    if "encoder_cache_used" not in frame:
        return set()
    return set(frame.variant[frame.encoder_cache_used.fillna(False).astype(bool)])


def plot_costs(runs: pd.DataFrame, canvas: Canvas) -> plt.Figure:
    """Peak memory and step time per variant (bars: mean over seeds); a step time measured on cached encoder outputs hatched."""
    panels = {"peak_memory_mb": "peak memory (MiB)", "step_time_ms": "step time (ms)"}
    require(runs, ("variant", *panels), "runs.csv")
    palette = canvas.colours(runs.variant)
    cached = cached_variants(runs)
    fig, axes = canvas.figure(1, len(panels), size=(14, 6))
    for ax, (col, label) in zip(axes, panels.items()):
        sns.barplot(data=runs, x="variant", y=col, hue="variant", order=list(palette), hue_order=list(palette), palette=palette, legend=False, ax=ax)
        if col == "step_time_ms":
            for variant, bar in zip(palette, ax.patches):
                if variant in cached:
                    bar.set(hatch="//", facecolor="white", edgecolor=palette[variant])
        ax.set_xlabel("")
        ax.set_ylabel(label)
        ax.tick_params(axis="x", rotation=45, labelsize="small")
    note = f"hatched: {', '.join(v for v in palette if v in cached)} {CACHED_NOTE}" if cached else ""
    fig.suptitle("Training costs per variant" + ("\n" + textwrap.fill(note, 90) if note else ""), fontsize="medium")  # 90: a 14-inch figure
    return fig


def plot_latency(runs: pd.DataFrame, canvas: Canvas) -> plt.Figure:
    """Inference latency at the eval batch of the base model, the method unmerged and merged (where it merges), per variant that
    adds to the model: bars the median pass (mean over seeds), error bars the repetitions' quartiles (lowest to highest over seeds)."""
    require(runs, ("variant", "family", *LATENCY_MODELS), "runs.csv")
    methods = runs[[not family(name).base_architecture for name in runs.family]]
    if methods.empty:
        raise StageError("runs.csv has no run of a method that adds to the model (LoRA, adapters, prompts, peft)")
    if methods.latency_unmerged_ms.isna().all():
        raise StageError("no run measured its inference latency (train.latency_batches 0 when they ran?)")
    variants = list(dict.fromkeys(methods.variant))
    fig, ax = canvas.figure()
    width = 0.8 / len(LATENCY_MODELS)
    for j, (column, model) in enumerate(LATENCY_MODELS.items()):
        mode = column.removeprefix("latency_").removesuffix("_ms")
        for i, variant in enumerate(variants):
            rows = methods[methods.variant == variant]
            if rows[column].isna().all():
                continue
            x, height = i + (j - 1) * width, rows[column].mean()
            low, high = (rows.get(f"latency_{mode}_{q}_ms", pd.Series([np.nan])) for q in ("q25", "q75"))
            yerr = None if low.isna().all() else [[height - low.min()], [high.max() - height]]
            ax.bar(x, height, width, yerr=yerr, capsize=3, color=sns.color_palette()[j], label=model if i == 0 else None)
    ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right", fontsize="small")
    ax.set_ylabel("forward pass (ms)")
    batch = ", ".join(str(int(b)) for b in dict.fromkeys(methods.latency_batch)) if "latency_batch" in methods else "the eval batch's"
    ax.set_title(f"Inference latency, batch of {batch} windows", fontsize="medium")
    ax.legend(title="model (bars: quartiles of the passes)", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", title_fontsize="x-small")
    return fig


def plot_snr(auc_snr: pd.DataFrame, canvas: Canvas) -> plt.Figure:
    """Test AUC of each injection-SNR bin against all noise, per variant (mean over seeds, bars: min to max)."""
    require(auc_snr, ("variant", "snr_median", "auc"), "auc_by_snr.csv (a row per run and SNR bin of injected test signals)")
    palette = canvas.colours(auc_snr.variant)
    fig, ax = canvas.figure()
    sns.lineplot(
        data=auc_snr, x="snr_median", y="auc", hue="variant", hue_order=list(palette),
        palette=palette, marker="o", errorbar=("pi", 100), err_style="bars", linewidth=2, ax=ax,
    )
    ax.set_xlabel("network optimal SNR of the injection (bin median)")
    ax.set_ylabel("test AUC, signals in bin vs all noise")
    ax.set_title("Test AUC vs injection SNR")
    ax.legend(title="variant", fontsize="x-small", title_fontsize="x-small", ncol=2)
    return fig


def plot_shift_auc(shift_runs: pd.DataFrame, canvas: Canvas, shift: pd.DataFrame | None = None) -> plt.Figure:
    """AUC per test set (in-distribution first) and variant at its selected lr: bars rise or fall from chance (0.5) to the mean
    over seeds, error bars the AUC's 95% bootstrap interval from shift.csv (when given), points the seeds."""
    require(shift_runs, ("test_set", "variant", "seed", "selected", "auc"), "shift_runs.csv (a row per run and test set)")
    rows = shift_runs[shift_runs.selected.astype(bool)]
    palette = canvas.colours(rows.variant)
    order = list(dict.fromkeys(rows.test_set))
    fig, ax = canvas.figure(size=(max(10, 2.5 * len(order) + 4), 6))
    width = 0.8 / len(palette)
    means = rows.groupby(["test_set", "variant"]).auc.mean()
    intervals = None if shift is None else shift.set_index(["test_set", "variant"])[["auc_ci_low", "auc_ci_high"]]
    for j, (variant, colour) in enumerate(palette.items()):
        for i, name in enumerate(order):
            if (name, variant) not in means.index:
                continue
            x, auc = i + (j - (len(palette) - 1) / 2) * width, means[(name, variant)]
            yerr = None
            if intervals is not None and (name, variant) in intervals.index:
                low, high = intervals.loc[(name, variant)]
                yerr = None if np.isnan(low) else [[max(0.0, auc - low)], [max(0.0, high - auc)]]
            ax.bar(x, auc - 0.5, width, bottom=0.5, color=colour, alpha=0.7, yerr=yerr, capsize=2, label=variant if i == 0 else None)
            seeds = rows[(rows.test_set == name) & (rows.variant == variant)].auc
            ax.scatter(np.full(len(seeds), x), seeds, color=colour, edgecolor="black", linewidth=0.5, s=20, zorder=3)
    ax.axhline(0.5, color="black", linewidth=1.5)
    ax.set_ylim(0.0, 1.0)
    ax.set_xticks(range(len(order)), order)
    ax.set_xlabel("test set (test: in distribution)")
    ax.set_ylabel("AUC of the best checkpoint")
    ax.set_title("AUC per test set (bars from chance, 0.5" + ("; 95% intervals)" if intervals is not None else ")"), fontsize="medium")
    ax.legend(title="variant", fontsize="x-small", title_fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def dodge_offsets(n: int, medians) -> np.ndarray:
    """Horizontal offsets for `n` variants around each bin's median: spread over 70% of the narrowest gap between bins, so no two meet."""
    gaps = np.diff(np.sort(np.unique(np.asarray(medians, dtype=float))))
    span = 0.7 * float(gaps.min()) if len(gaps) else 1.0
    return (np.arange(n) - (n - 1) / 2) * (span / max(1, n - 1))


def plot_efficiency(eff: pd.DataFrame, canvas: Canvas) -> plt.Figure:
    """Detection efficiency at the FPR against injected SNR, one panel per test set, with binomial intervals dodged apart."""
    require(eff, ("test_set", "variant", "snr_median", "efficiency", "ci_low", "ci_high", "threshold_fpr"),
            "efficiency.csv (a row per test set, variant and SNR bin of injected signals)")
    sets = list(dict.fromkeys(eff.test_set))
    palette = canvas.colours(eff.variant)
    fig, axes = canvas.figure(1, len(sets), size=(7 * len(sets) + 2, 6), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], sets):
        rows = eff[eff.test_set == name]
        offsets = dodge_offsets(len(palette), rows.snr_median)
        for offset, (variant, colour) in zip(offsets, palette.items()):
            r = rows[rows.variant == variant]
            if r.empty:
                continue
            ax.errorbar(r.snr_median + offset, r.efficiency, yerr=[r.efficiency - r.ci_low, r.ci_high - r.efficiency], color=colour,
                        marker="o", markersize=4, capsize=2, elinewidth=1.5, linewidth=1, alpha=0.9, label=variant)
        draw_oracle(ax, rows)
        ax.set_title(f"{name}", fontsize="medium")
        ax.set_xlabel("injected network SNR (bin median)")
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].set_ylabel(f"detection efficiency at {100 * eff.threshold_fpr.iloc[0]:g}% FPR")
    axes[0][-1].legend(title="variant", fontsize="x-small", title_fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle("Detection efficiency vs SNR per test set (bars: envelope of the seeds' 95% binomial intervals; variants side by side)", fontsize="medium")
    return fig


def plot_context(context: pd.DataFrame, canvas: Canvas) -> plt.Figure:
    """The context axis: each context's paired Δ test AUC to the reference (30 s) with its 95% interval, against its step time."""
    require(context, ("variant", "context", "delta_vs_reference", "ci_low", "ci_high", "step_time_ms", "reference"),
            "context.csv (a row per variant and context: the config lists no contexts?)")
    from .aggregate import CONTEXT_TOLERANCE

    palette = variant_palette(list(dict.fromkeys(context.variant)))  # the table names variants without their context
    fig, ax = canvas.figure()
    for variant, rows in context.groupby("variant", sort=False):
        rows = rows.sort_values("step_time_ms")
        err = [rows.delta_vs_reference - rows.ci_low, rows.ci_high - rows.delta_vs_reference]
        ax.errorbar(rows.step_time_ms, rows.delta_vs_reference, yerr=err, color=palette[variant], marker="o", capsize=4, linewidth=2, label=variant)
        for row in rows.itertuples():
            ax.annotate(row.context, (row.step_time_ms, row.delta_vs_reference), textcoords="offset points", xytext=(6, 6), fontsize="x-small")
    ax.axhline(0, color="grey", linewidth=1)
    ax.axhline(-CONTEXT_TOLERANCE, color="grey", linestyle="--", linewidth=1, label=f"-{CONTEXT_TOLERANCE:g} (tolerance)")
    ax.set_xscale("log")
    ax.set_xlabel("step time (ms, log scale)")
    ax.set_ylabel(f"Δ test AUC vs {'/'.join(dict.fromkeys(context.reference))} (95% CI)")
    ax.set_title("Encoder context: accuracy against cost")
    ax.legend(fontsize="x-small", ncol=2)
    return fig


def selected_lrs(runs: pd.DataFrame) -> pd.Series:
    """Each variant's selected lr (display order), from the runs marked `selected`; stop unless exactly one per variant."""
    if runs.selected.dtype != bool:
        raise StageError(f"runs.csv: the column 'selected' is not boolean (dtype {runs.selected.dtype})")
    chosen = runs[runs.selected].groupby("variant", sort=False).lr
    problems = {"none": [v for v in runs.variant.unique() if v not in chosen.groups],
                "several": [v for v, n in chosen.nunique().items() if n > 1]}
    if any(problems.values()):
        found = "; ".join(f"{kind} for {variants}" for kind, variants in problems.items() if variants)
        raise StageError(f"runs.csv must mark one selected lr per variant: {found}")
    return chosen.first()


def plot_lr_sensitivity(runs: pd.DataFrame, canvas: Canvas, lr_selection: str | None = "val_loss") -> plt.Figure:
    """The validation metric that selects the lr (`lr_selection`, train.lr_selection) and the test AUC against the learning
    rate (log axis): per variant the mean over seeds, seeds faint, the selected lr ringed."""
    panels = dict([LR_SELECTION_PANELS[lr_selection or "val_loss"], LR_TEST_PANEL])
    require(runs, ("variant", "seed", "lr", "selected", *panels), "runs.csv")
    chosen = selected_lrs(runs)
    fig, axes = canvas.figure(1, len(panels), size=(16, 6.5))
    for ax, (col, label) in zip(axes, panels.items()):
        for variant, colour in canvas.colours(runs.variant).items():
            rows = runs[runs.variant == variant]
            means = rows.groupby("lr")[col].mean()
            ax.scatter(rows.lr, rows[col], color=colour, alpha=0.3, s=25, linewidth=0)
            ax.plot(means.index, means.values, marker="o", markersize=6, linewidth=2, color=colour, label=variant)
            ax.scatter([chosen[variant]], [means[chosen[variant]]], s=300, facecolors="none", edgecolors=colour, linewidths=2.5)
            if len(means) > 1 and chosen[variant] in (means.index.min(), means.index.max()):  # a rate outside the grid may do better
                ax.annotate("grid edge", (chosen[variant], means[chosen[variant]]), textcoords="offset points", xytext=(0, 12),
                            ha="center", fontsize="x-small", color=colour)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(label)
    ring = plt.Line2D([], [], marker="o", markersize=14, markerfacecolor="none", markeredgecolor="grey", markeredgewidth=2.5,
                      linestyle="none", label="selected lr")
    handles, _ = axes[-1].get_legend_handles_labels()
    axes[-1].legend(handles=[*handles, ring], title="variant", fontsize="x-small", title_fontsize="x-small", loc="best")
    n_seeds = runs.groupby(["variant", "lr"]).seed.nunique().max()
    fig.suptitle(f"{axes[0].get_ylabel().split(' (')[0].capitalize()} and test AUC vs learning rate"
                 + (f" (mean of {n_seeds} seeds; dots: seeds)" if n_seeds > 1 else "")
                 + "\nring: the lr selected on validation (train.lr_selection); the test panel shows sensitivity only and selects nothing",
                 fontsize="medium")
    return fig


def pareto_front(costs, quality) -> np.ndarray:
    """Boolean mask of the points no other point dominates (lower-or-equal cost and higher-or-equal quality, one strictly).

    Equal points do not dominate each other (both are on the front); a point
    with a NaN cost or quality is never on the front and dominates nothing.
    """
    cost, qual = np.asarray(costs, dtype=float), np.asarray(quality, dtype=float)
    if cost.ndim != 1 or cost.shape != qual.shape:
        raise ValueError(f"costs and quality must be 1-D and of one length, not {cost.shape} and {qual.shape}")
    valid = ~(np.isnan(cost) | np.isnan(qual))
    # [i, j]: point j dominates point i
    at_most = (cost[None, :] <= cost[:, None]) & (qual[None, :] >= qual[:, None])
    strictly = (cost[None, :] < cost[:, None]) | (qual[None, :] > qual[:, None])
    dominated = (at_most & strictly & valid[None, :]).any(axis=1)
    return valid & ~dominated


def plot_pareto(summary: pd.DataFrame, canvas: Canvas, shift: pd.DataFrame | None = None) -> plt.Figure:
    """Test AUC at each variant's selected lr against each cost, with the Pareto front; variants that did not learn are left out.

    The bars are the AUC's 95% bootstrap interval over the test windows (``auc_ci_low``/``auc_ci_high``, from shift.csv's
    in-distribution rows) where given, else the 95% t interval over seeds (none with one seed).
    """
    from .findings import IN_DISTRIBUTION, ranked  # the deck's verdict rules; imported here, as the Snakefile imports this module

    require(summary, ("variant", "test_auc", "test_auc_ci95", *PARETO_COSTS), "summary.csv")
    if summary.variant.duplicated().any():
        raise StageError(f"summary.csv has several rows for {sorted(set(summary.variant[summary.variant.duplicated()]))}")
    own = summary.family == MATCHED_FILTER if "family" in summary else pd.Series(False, index=summary.index)
    search, summary = summary[own], summary[~own]  # the matched filter trains nothing: a line, not a point on the front
    if shift is not None and "auc_ci_low" in shift:  # the in-distribution test split's bootstrap intervals
        test = shift[shift.test_set == IN_DISTRIBUTION][["variant", "auc_ci_low", "auc_ci_high"]]
        summary = summary.drop(columns=["auc_ci_low", "auc_ci_high"], errors="ignore").merge(test, on="variant", how="left")
    shown = ranked(summary)  # the deck's rule: a variant with a run that did not learn is on no front
    left_out = [v for v in summary.variant if v not in set(shown.variant)]
    nobody = shown.empty  # then every point is drawn, hollow, and no front
    shown = summary if nobody else shown
    if {"auc_ci_low", "auc_ci_high"} <= set(shown) and shown.auc_ci_low.notna().any():
        errors, bars = [shown.test_auc - shown.auc_ci_low, shown.auc_ci_high - shown.test_auc], "95% interval (bootstrap over test windows; with several seeds, widened by their spread)"
    else:
        errors, bars = [shown.test_auc_ci95, shown.test_auc_ci95], "95% t interval over seeds"
    errors = [pd.Series(np.maximum(0.0, e.to_numpy(dtype=float)), index=shown.variant) for e in errors]  # an interval beside its mean: to it
    fig, axes = canvas.figure(1, len(PARETO_COSTS), size=(21, 7), sharey=True)
    cached = cached_variants(shown)
    for ax, (col, (label, scale)) in zip(axes, PARETO_COSTS.items()):
        apart = cached if col == "step_time_ms" else set()  # a step on cached encoder outputs is not the same cost: on no front
        comparable = shown[~shown.variant.isin(apart)]
        front = shown.iloc[:0] if nobody else comparable[pareto_front(comparable[col], comparable.test_auc)].sort_values([col, "test_auc"])
        for row in shown.itertuples():
            yerr = [[errors[0][row.variant]], [errors[1][row.variant]]]
            hollow = nobody or row.variant in apart
            ax.errorbar([getattr(row, col)], [row.test_auc], yerr=None if np.isnan(yerr[0][0]) else yerr, fmt="o", markersize=9, capsize=4,
                        color=canvas.palette[row.variant], mfc="none" if hollow else canvas.palette[row.variant], label=row.variant)
        for i, row in enumerate(front.itertuples()):  # names on the front only, alternating above and below: the legend names the rest
            ax.annotate(row.variant, (getattr(row, col), row.test_auc), xytext=(6, 8 if i % 2 == 0 else -14), textcoords="offset points",
                        fontsize="x-small", color=canvas.palette[row.variant])
        if len(front):
            ax.step(front[col], front.test_auc, where="post", color="black", linestyle="--", linewidth=1.5, label="Pareto front")
        draw_matched_filter(ax, search)
        ax.set_xscale(scale)
        if scale == "log":
            ax.xaxis.set_minor_formatter(plt.NullFormatter())  # minor labels (2e6, 3e6, ...) overlap
        ax.margins(x=0.12, y=0.08)
        ax.set_xlabel(label)
        ax.set_ylabel("test AUC")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize="x-small", loc="outside right upper")
    title = f"Test AUC vs costs, each variant at its selected lr (bars: {bars}; dashed: Pareto front)"
    if nobody:
        title += "\nno variant learned (hollow: every one had a run that did not), so no front is drawn"
    elif left_out:
        title += f"\nleft out, as they did not learn: {', '.join(left_out)}"
    if cached:
        note = f"step time, hollow and on no front: {', '.join(v for v in shown.variant if v in cached)} {CACHED_NOTE}"
        title += "\n" + textwrap.fill(note, 130)  # the figure's width holds about 130 characters of a medium title
    fig.suptitle(title, fontsize="medium")
    return fig


def draw_oracle(ax, rows: pd.DataFrame) -> None:
    """The oracle's efficiency (a search that knows each signal's template, at the table's FPR) on one test set's panel."""
    if "oracle_efficiency" not in rows or rows.oracle_efficiency.isna().all():
        return
    oracle = rows.dropna(subset=["oracle_efficiency"]).groupby("snr_bin").agg(snr=("snr_median", "first"), p=("oracle_efficiency", "first"))
    ax.plot(oracle.snr, oracle.p, color="black", linestyle=":", linewidth=2.5, marker="s", label="oracle (perfect template)")


def draw_matched_filter(ax, search: pd.DataFrame) -> None:
    """The matched filter on a Pareto panel: it trains nothing, so no point on the cost axis; its test AUC as a line, its cost in words."""
    if search.empty:
        return
    row = search.iloc[0]
    ax.axhline(row.test_auc, color="black", linestyle=":", linewidth=2)
    cost = f"bank of {int(row.bank_size)}, {row.windows_per_s:.0f} windows/s" if "bank_size" in row and pd.notna(row.bank_size) else "no training"
    ax.annotate(f"matched filter ({cost})", (0.01, row.test_auc), xycoords=("axes fraction", "data"), xytext=(0, 4),
                textcoords="offset points", fontsize="x-small")


def active_bins(noise: np.ndarray) -> int:
    """How many mel bins (from the lowest) hold power in `noise` windows ([window, mel, frame]): above the strain's band a
    bin sits at its window's log-mel floor (max - 8, so a constant of the window) in most frames and would show as a black
    half. A bin is a floor bin when, in the typical window, at least half its frames sit at that window's floor."""
    floors = noise.min(axis=(1, 2), keepdims=True)
    at_floor = np.median((noise <= floors + 1e-6).mean(axis=2), axis=0)
    active = np.flatnonzero(at_floor < 0.5)
    return int(active.max()) + 1 if len(active) else noise.shape[1]


TRACK_FRAMES = 3  # the track is found on the excess averaged over this many frames: a chirp lasts several, a noise spike one
TRACK_FALSE_RATE = 1e-3  # a frame is marked where its excess beats what the noise windows' own frames reach this often


def excess_track(excess: np.ndarray, noise_excess: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frames, bins) of the time–frequency track: per frame the bin where the signal most exceeds the noise's median, in the
    frames where that excess ([mel, frame], averaged over :data:`TRACK_FRAMES`) beats the (1 - :data:`TRACK_FALSE_RATE`)
    quantile of the same statistic over the noise windows' frames (`noise_excess`, [window, mel, frame]): on pure noise
    about one frame in a thousand is marked. The first and last frames (the STFT's padded edges) are never marked."""
    from scipy.ndimage import uniform_filter1d

    smooth = uniform_filter1d(excess, TRACK_FRAMES, axis=-1, mode="nearest")
    reference = uniform_filter1d(noise_excess, TRACK_FRAMES, axis=-1, mode="nearest").max(axis=1)[..., 1:-1]
    threshold = np.quantile(reference, 1 - TRACK_FALSE_RATE)
    peak = smooth.max(axis=0)
    frames = np.flatnonzero(peak > threshold)
    frames = frames[(frames > 0) & (frames < excess.shape[-1] - 1)]
    return frames, smooth[:, frames].argmax(axis=0)


def plot_examples(features_dir: Path, canvas: Canvas) -> plt.Figure:
    """The model's input for the loudest signal window (its whitened strain's log-mel), its excess over the median noise
    window with the chirp's track marked, and a noise window; one column per channel, the bins that hold power only."""
    from .features import load_features, load_snr

    x, labels, meta = load_features(features_dir, mmap=True)
    snr = load_snr(features_dir)
    signal_rows, noise_rows = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if not len(signal_rows) or not len(noise_rows):
        raise StageError(f"{features_dir}: the example figure needs a signal and a noise window")
    names = meta.get("label_names")  # audio data names its classes; strain windows hold a signal or noise
    positive, negative = (f"label 1 ({names['1']})", f"label 0 ({names['0']})") if names else ("signal", "noise")
    loudest, quiet = signal_rows[np.argmax(snr[signal_rows])], noise_rows[0]
    channels, seconds = meta["channels"], meta["n_frames"] / WHISPER_FRAMES_PER_SECOND
    fig, axes = canvas.figure(3, len(channels), size=(6 * len(channels) + 1, 9.5), style="white", squeeze=False)
    for col, channel in enumerate(channels):
        noise = np.asarray(x[noise_rows[:64], col])
        top = active_bins(noise)
        typical = np.median(noise[:, :top], axis=0)
        excess = np.asarray(x[loudest, col, :top]) - typical
        extent = (0, seconds, 0, top)
        vmin, vmax = np.percentile(np.asarray(x[[loudest, quiet], col, :top]), [2, 99.5])
        loud = f" (network SNR {snr[loudest]:.1f})" if snr[loudest] > 0 else ""
        panels = ((x[loudest, col, :top], f"{channel}: {positive}{loud}", dict(cmap="magma", vmin=vmin, vmax=vmax)),
                  (excess, f"{channel}: {positive} minus the median {negative}", dict(cmap="RdBu_r", vmin=-np.abs(excess).max(), vmax=np.abs(excess).max())),
                  (x[quiet, col, :top], f"{channel}: {negative}", dict(cmap="magma", vmin=vmin, vmax=vmax)))
        for row, (image, title, style) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(image, origin="lower", aspect="auto", extent=extent, **style)
            ax.set_title(title, fontsize="small")
            ax.set_xlabel("time (s)" if row == 2 else "")
            ax.set_ylabel(f"mel bin (0–{top - 1})" if col == 0 else "")
        frames, bins = excess_track(excess, noise[:, :top] - typical)
        axes[1, col].scatter((frames + 0.5) * seconds / meta["n_frames"], bins + 0.5, s=12, facecolors="none", edgecolors="black", linewidths=1)
    look = ("what to look for: the chirp, power sweeping up in frequency to the merger; circles mark the frames where the\n"
            f"signal exceeds the noise more than noise windows' frames do 1 time in {round(1 / TRACK_FALSE_RATE)}"
            if not names else "what to look for: where the positive clip's power differs\nfrom the typical negative clip (circles)")
    fig.suptitle(look, fontsize="small")
    return fig


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the stage: the input it draws from, the function that draws it, and its slide's title.

    Its caption is ``workflow/report/<name>.rst``, in the Snakemake report and on the slide.
    """

    source: str  # a key of INPUTS
    draw: Callable[[object, Canvas], plt.Figure]
    title: str
    extra: str | None = None  # a key of INPUTS the figure uses when given (passed by that name), e.g. shift.csv's intervals


# make_figures' inputs: what each is, as the Python argument and the command-line option name it
INPUTS = {
    "curves": "curves.csv (curves_csv, --curves)",
    "runs": "runs.csv (runs_csv, --runs)",
    "selected_runs": "runs.csv (runs_csv, --runs), its selected-lr rows",
    "auc_by_snr": "auc_by_snr.csv (auc_by_snr_csv, --auc-by-snr)",
    "examples": "a feature cache (examples, --examples)",
    "summary": "summary.csv (summary_csv, --summary)",
    "shift_runs": "shift_runs.csv (shift_runs_csv, --shift-runs)",
    "shift": "shift.csv (shift_csv, --shift)",
    "efficiency": "efficiency.csv (efficiency_csv, --efficiency)",
    "context": "context.csv (context_csv, --context)",
}


# Every figure the stage can draw, in drawing order; figure_names picks those a config produces.
FIGURES = {
    "example_inputs": FigureSpec("examples", plot_examples, "What the encoder sees"),
    "val_auc_vs_time": FigureSpec("curves", partial(plot_curves, y="val_auc"), "Validation AUC vs training time"),
    "val_loss_vs_time": FigureSpec("curves", partial(plot_curves, y="val_loss"), "Validation loss vs training time"),
    "test_auc_vs_parameters": FigureSpec("selected_runs", plot_params, "Test AUC vs trainable parameters"),
    "costs": FigureSpec("selected_runs", plot_costs, "Training costs"),
    "lr_sensitivity": FigureSpec("runs", plot_lr_sensitivity, "Learning rates: chosen on validation", extra="lr_selection"),
    "pareto": FigureSpec("summary", plot_pareto, "Quality against cost: the Pareto front", extra="shift"),
    "val_auc_vs_rank": FigureSpec("selected_runs", plot_rank, "Validation AUC vs LoRA rank"),
    "latency": FigureSpec("selected_runs", plot_latency, "Inference latency"),
    "auc_vs_snr": FigureSpec("auc_by_snr", plot_snr, "Test AUC vs injection SNR"),
    "efficiency": FigureSpec("efficiency", plot_efficiency, "Detection efficiency vs SNR"),
    "shift_auc": FigureSpec("shift_runs", plot_shift_auc, "AUC per test set", extra="shift"),
    "context_auc_vs_cost": FigureSpec("context", plot_context, "Encoder context: AUC against cost"),
}


def figure_names(config: dict) -> list[str]:
    """The figures a (validated) config produces, in drawing order: the one place that decides it.

    Every config: the example inputs, the two training curves, test AUC vs
    parameters, the costs, the lr sensitivity and the Pareto figure. LoRA variants add the rank figure; any family
    beyond full, frozen and partial adds the latency figure unless ``train.latency_batches`` is 0. Data with injected
    signals (``data.source`` in ``INJECTION_SOURCES``) add AUC vs SNR and the detection efficiency; shifted test
    sets (``evaluation.test_sets``) the AUC per test set; a list of contexts (``model.context``) the context figure.
    """
    train = config["train"]
    names = {v.family for v in expand_variants(train).values()}
    produced = {
        "val_auc_vs_rank": "lora" in names,
        "latency": any(not family(name).base_architecture for name in names) and train["latency_batches"] > 0,
        "auc_vs_snr": config["data"]["source"] in INJECTION_SOURCES,
        "efficiency": config["data"]["source"] in INJECTION_SOURCES,
        "shift_auc": bool(config["evaluation"]["test_sets"]),
        "context_auc_vs_cost": isinstance(config["model"]["context"], list),
    }
    return [name for name in FIGURES if produced.get(name, True)]


def make_figures(
    curves_csv: str | Path, out_dir: str | Path, runs_csv: str | Path | None = None, auc_by_snr_csv: str | Path | None = None,
    examples: str | Path | None = None, *, figures: Sequence[str] | None = None, summary_csv: str | Path | None = None,
    shift_runs_csv: str | Path | None = None, efficiency_csv: str | Path | None = None,
    context_csv: str | Path | None = None, shift_csv: str | Path | None = None, lr_selection: str = "val_loss",
) -> list[Path]:
    """Draw exactly `figures` (names of :data:`FIGURES`, as :func:`figure_names` lists them) into `out_dir`.

    `figures` None draws every figure of :data:`FIGURES`. Returns the PNG and
    SVG paths written, in the order of `figures`. A figure whose input was not
    given, or whose data cannot support it (no LoRA run, no latency, no SNR
    rows), raises a StageError naming the figure and why: nothing is skipped.
    The ``pareto`` figure is drawn from `summary_csv` (summary.csv), every
    other table figure from `runs_csv` or the other tables; `shift_csv` (shift.csv), when given, adds the AUC's
    bootstrap intervals to the Pareto and shifted-set figures; `lr_selection` (train.lr_selection) is the validation metric
    the learning-rate figure shows beside the test AUC.
    """
    names = list(dict.fromkeys(FIGURES if figures is None else figures))
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise StageError(f"unknown figures {unknown}; the stage draws {list(FIGURES)}")
    inputs = {"curves": curves_csv, "runs": runs_csv, "selected_runs": runs_csv, "auc_by_snr": auc_by_snr_csv, "examples": examples,
              "summary": summary_csv, "shift_runs": shift_runs_csv, "efficiency": efficiency_csv, "context": context_csv, "shift": shift_csv}
    for name in names:
        if inputs[FIGURES[name].source] is None:
            raise StageError(f"figure {name!r} is drawn from {INPUTS[FIGURES[name].source]}, which was not given")
    data = {key: pd.read_csv(path) for key, path in inputs.items() if key not in ("examples", "selected_runs") and path is not None}
    if "runs" in data:  # every figure but the lr sensitivity shows each variant at its selected lr
        data["selected_runs"] = data["runs"][data["runs"]["selected"].astype(bool)] if "selected" in data["runs"] else data["runs"]
    data["examples"] = None if examples is None else Path(examples)
    data["lr_selection"] = lr_selection
    canvas_variants = data.get("runs", pd.DataFrame()).get("variant", [])
    for key in ("runs", "selected_runs"):  # the lr, parameter and training-cost figures: the matched filter trains nothing
        if key in data and "family" in data[key]:
            data[key] = data[key][data[key].family != MATCHED_FILTER]
    # one colour per variant across all figures: display order of the curves, then any variant only the other tables hold
    canvas = Canvas(out_dir, [v for key in ("curves", "runs", "summary", "auc_by_snr") if key in data for v in data[key].get("variant", [])]
                    + list(canvas_variants))
    paths = []
    for name in names:
        figure = FIGURES[name]
        try:
            fig = figure.draw(data[figure.source], canvas, **({figure.extra: data.get(figure.extra)} if figure.extra else {}))
        except StageError as exc:
            raise StageError(f"cannot draw figure {name!r}: {exc}") from None
        paths += canvas.save(fig, name)
    return paths


def _parser(p):
    p.add_argument("--figures", required=True, nargs="+", choices=list(FIGURES), metavar="NAME",
                   help=f"the figures to draw, as gwlora.plot.figure_names lists them for the config: any of {', '.join(FIGURES)}")
    p.add_argument("--curves", required=True, help="curves.csv written by the aggregate stage")
    p.add_argument("--runs", help="runs.csv written by the aggregate stage (parameter, cost, lr sensitivity, rank and latency figures)")
    p.add_argument("--auc-by-snr", help="auc_by_snr.csv written by the aggregate stage (AUC vs injection SNR figure)")
    p.add_argument("--examples", help="a feature cache (the test split) to draw example inputs from")
    p.add_argument("--summary", help="summary.csv written by the aggregate stage (Pareto figure)")
    p.add_argument("--shift-runs", help="shift_runs.csv written by the aggregate stage (AUC per test set figure)")
    p.add_argument("--shift", help="shift.csv written by the aggregate stage (the AUC intervals of the Pareto and shifted-set figures)")
    p.add_argument("--efficiency", help="efficiency.csv written by the aggregate stage (detection efficiency figure)")
    p.add_argument("--context", help="context.csv written by the aggregate stage (context figure)")
    p.add_argument("--lr-selection", choices=list(LR_SELECTION_PANELS), default="val_loss",
                   help="train.lr_selection: the validation metric the learning-rate figure shows as selecting the lr")
    p.add_argument("--out", required=True, help="output directory of the figures")


def _run(args):
    """Plot the listed figures from the aggregated tables."""
    paths = make_figures(args.curves, args.out, args.runs, args.auc_by_snr, args.examples, figures=args.figures, summary_csv=args.summary,
                         shift_runs_csv=args.shift_runs, efficiency_csv=args.efficiency, context_csv=args.context, shift_csv=args.shift,
                         lr_selection=args.lr_selection)
    log.info("wrote %d figure files to %s", len(paths), args.out)


def main(argv=None) -> int:
    return run_stage("plot", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
