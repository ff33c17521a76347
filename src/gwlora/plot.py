"""Stage `plot`: the presentation's figures from the aggregated curves (seaborn).

* ``val_auc_vs_time.{png,svg}``: validation AUC against cumulative training time;
* ``val_loss_vs_time.{png,svg}``: validation loss against cumulative training time;
* with the runs table: ``test_auc_vs_parameters`` (log axis), ``costs`` (peak
  memory and step time per variant), and when there are LoRA runs
  ``val_auc_vs_rank`` (full and frozen as reference lines) and ``latency``
  (base, LoRA unmerged and merged);
* with the AUC-by-SNR table (data with injections): ``auc_vs_snr``;
* with a feature cache: ``example_inputs``, the log-mel the encoder sees for
  the strongest signal and for a noise window of the test split.

One colour per variant, the same in every figure. Curves show the mean over
seeds at each evaluation, with a band from the lowest to the highest seed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .cli import StageError, atomic_file, run_stage  # noqa: E402
from .constants import WHISPER_FRAMES_PER_SECOND  # noqa: E402

log = logging.getLogger("gwlora.plot")

FIGURES = {
    "val_auc_vs_time": ("val_auc", "validation AUC"),
    "val_loss_vs_time": ("val_loss", "validation loss"),
}
FORMATS = ("png", "svg")


def variant_palette(variants: list[str]) -> dict[str, tuple]:
    """A stable colour per variant, in display order."""
    colours = sns.color_palette("tab10" if len(variants) <= 10 else "husl", len(variants))
    return dict(zip(variants, colours))


def seed_bands(curves: pd.DataFrame, y: str) -> pd.DataFrame:
    """Per variant and evaluation step: mean training time, and the mean, lowest and highest `y` over seeds.

    Every seed of a variant evaluates at the same steps, so steps align the
    seeds' curves even though their wall-clock times differ a little.
    """
    grouped = curves.groupby(["variant", "step"], sort=False)
    return grouped.agg(time=("train_time_s", "mean"), mean=(y, "mean"), low=(y, "min"), high=(y, "max"), seeds=("seed", "nunique")).reset_index()


def plot_curves(curves: pd.DataFrame, y: str, ylabel: str, palette: dict) -> plt.Figure:
    sns.set_theme(context="talk", style="whitegrid")
    fig, ax = plt.subplots(figsize=(10, 6), layout="constrained")
    bands = seed_bands(curves, y)
    for variant, colour in palette.items():
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


def save_figure(fig: plt.Figure, stem: Path) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = stem.with_suffix(f".{fmt}")
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150)
        paths.append(path)
    plt.close(fig)
    return paths


def plot_rank(runs: pd.DataFrame, palette: dict) -> plt.Figure:
    """Best val AUC against LoRA rank (log2 axis; mean and seeds), full and frozen as reference lines."""
    sns.set_theme(context="talk", style="whitegrid")
    fig, ax = plt.subplots(figsize=(10, 6), layout="constrained")
    lora = runs[runs.family == "lora"]
    for group, rows in lora.groupby("group", sort=False):
        colour = palette[rows.variant.iloc[-1]]
        ax.scatter(rows["rank"], rows.best_val_auc, color=colour, alpha=0.5, s=30)
        means = rows.groupby("rank").best_val_auc.mean()
        ax.plot(means.index, means.values, marker="o", color=colour, linewidth=2, label=group)
    for family, style in (("full", "--"), ("frozen", ":")):
        ref = runs[runs.family == family]
        if len(ref):
            ax.axhline(ref.best_val_auc.mean(), linestyle=style, color=palette[ref.variant.iloc[0]], linewidth=2, label=family)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("LoRA rank r")
    ax.set_ylabel("best validation AUC")
    ax.set_title("Validation AUC vs LoRA rank")
    ax.legend(fontsize="small")
    return fig


def plot_params(runs: pd.DataFrame, palette: dict) -> plt.Figure:
    """Test AUC against trainable parameters (log axis), one colour per variant."""
    sns.set_theme(context="talk", style="whitegrid")
    fig, ax = plt.subplots(figsize=(10, 6), layout="constrained")
    sns.scatterplot(data=runs, x="trainable_parameters", y="test_auc", hue="variant", hue_order=list(palette), palette=palette, s=120, ax=ax)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("test AUC")
    ax.set_title("Test AUC vs trainable parameters")
    ax.legend(fontsize="x-small", ncol=2)
    return fig


def plot_costs(runs: pd.DataFrame, palette: dict) -> plt.Figure:
    """Peak memory and step time per variant (bars: mean over seeds)."""
    sns.set_theme(context="talk", style="whitegrid")
    fig, axes = plt.subplots(1, 2, figsize=(14, 6), layout="constrained")
    for ax, (col, label) in zip(axes, (("peak_memory_mb", "peak memory (MB)"), ("step_time_ms", "step time (ms)"))):
        sns.barplot(data=runs, x="variant", y=col, hue="variant", order=list(palette), hue_order=list(palette), palette=palette, legend=False, ax=ax)
        ax.set_xlabel("")
        ax.set_ylabel(label)
        ax.tick_params(axis="x", rotation=45, labelsize="small")
    fig.suptitle("Training costs per variant")
    return fig


def plot_latency(runs: pd.DataFrame) -> plt.Figure:
    """Inference latency of the base model, LoRA unmerged and LoRA merged, per LoRA variant."""
    sns.set_theme(context="talk", style="whitegrid")
    lora = runs[runs.family == "lora"].melt(
        id_vars=["variant"], value_vars=["latency_base_ms", "latency_unmerged_ms", "latency_merged_ms"], var_name="model", value_name="ms"
    ).dropna()
    lora["model"] = lora["model"].str.removeprefix("latency_").str.removesuffix("_ms")
    fig, ax = plt.subplots(figsize=(10, 6), layout="constrained")
    sns.barplot(data=lora, x="variant", y="ms", hue="model", hue_order=["base", "unmerged", "merged"], ax=ax)
    ax.set_xlabel("")
    ax.set_ylabel("forward pass of one batch (ms)")
    ax.set_title("Inference latency: base, LoRA unmerged, LoRA merged")
    ax.tick_params(axis="x", rotation=30, labelsize="small")
    return fig


def plot_snr(auc_snr: pd.DataFrame, palette: dict) -> plt.Figure:
    """Test AUC of each injection-SNR bin against all noise, per variant (mean over seeds, bars: min to max)."""
    sns.set_theme(context="talk", style="whitegrid")
    fig, ax = plt.subplots(figsize=(10, 6), layout="constrained")
    sns.lineplot(
        data=auc_snr, x="snr_median", y="auc", hue="variant", hue_order=[v for v in palette if v in set(auc_snr.variant)],
        palette=palette, marker="o", errorbar=("pi", 100), err_style="bars", linewidth=2, ax=ax,
    )
    ax.set_xlabel("network optimal SNR of the injection (bin median)")
    ax.set_ylabel("test AUC, signals in bin vs all noise")
    ax.set_title("Test AUC vs injection SNR")
    ax.legend(title="variant", fontsize="x-small", title_fontsize="x-small", ncol=2)
    return fig


def plot_examples(features_dir: str | Path) -> plt.Figure:
    """The model's input: log-mel of the loudest signal window and of a noise window, one panel per channel."""
    from .features import load_features, load_snr

    x, labels, meta = load_features(features_dir, mmap=True)
    snr = load_snr(features_dir)
    signal_rows, noise_rows = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if not len(signal_rows) or not len(noise_rows):
        raise StageError(f"{features_dir}: the example figure needs a signal and a noise window")
    examples = {"signal": signal_rows[np.argmax(snr[signal_rows])], "noise": noise_rows[0]}
    channels = meta["channels"]
    sns.set_theme(context="talk", style="white")
    fig, axes = plt.subplots(2, len(channels), figsize=(6 * len(channels) + 1, 7), layout="constrained", squeeze=False)
    seconds = meta["n_frames"] / WHISPER_FRAMES_PER_SECOND
    for row, (kind, i) in enumerate(examples.items()):
        for col, channel in enumerate(channels):
            ax = axes[row, col]
            image = ax.imshow(x[i, col], origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, meta["n_mels"]))
            title = f"{channel}: {kind}" + (f" (network SNR {snr[i]:.1f})" if kind == "signal" and snr[i] > 0 else "")
            ax.set_title(title, fontsize="small")
            ax.set_xlabel("time (s)" if row == 1 else "")
            ax.set_ylabel("mel bin" if col == 0 else "")
    fig.colorbar(image, ax=axes, label="log-mel (Whisper scale)", shrink=0.8)
    return fig


def make_figures(
    curves_csv: str | Path, out_dir: str | Path, runs_csv: str | Path | None = None, auc_by_snr_csv: str | Path | None = None,
    examples: str | Path | None = None,
) -> list[Path]:
    curves = pd.read_csv(curves_csv)
    missing = {"variant", "seed", "train_time_s", *(y for y, _ in FIGURES.values())} - set(curves.columns)
    if missing:
        raise StageError(f"{curves_csv}: missing columns {sorted(missing)}")
    if curves.empty:
        raise StageError(f"{curves_csv}: no evaluation rows to plot")
    palette = variant_palette(list(dict.fromkeys(curves["variant"])))
    out_dir = Path(out_dir)
    paths = []
    for stem, (y, ylabel) in FIGURES.items():
        paths += save_figure(plot_curves(curves, y, ylabel, palette), out_dir / stem)
    if runs_csv is not None:
        runs = pd.read_csv(runs_csv)
        paths += save_figure(plot_params(runs, palette), out_dir / "test_auc_vs_parameters")
        paths += save_figure(plot_costs(runs, palette), out_dir / "costs")
        if (runs.family == "lora").any():
            paths += save_figure(plot_rank(runs, palette), out_dir / "val_auc_vs_rank")
            if runs.get("latency_unmerged_ms", pd.Series(dtype=float)).notna().any():
                paths += save_figure(plot_latency(runs), out_dir / "latency")
    if auc_by_snr_csv is not None:
        auc_snr = pd.read_csv(auc_by_snr_csv)
        if len(auc_snr):
            paths += save_figure(plot_snr(auc_snr, palette), out_dir / "auc_vs_snr")
    if examples is not None:
        paths += save_figure(plot_examples(examples), out_dir / "example_inputs")
    return paths


def _parser(p):
    p.add_argument("--curves", required=True, help="curves.csv written by the aggregate stage")
    p.add_argument("--runs", help="runs.csv written by the aggregate stage (rank, parameter, cost and latency figures)")
    p.add_argument("--auc-by-snr", help="auc_by_snr.csv written by the aggregate stage (AUC vs injection SNR figure)")
    p.add_argument("--examples", help="a feature cache (the test split) to draw example inputs from")
    p.add_argument("--out", required=True, help="output directory of the figures")


def _run(args):
    """Plot the study's figures from the aggregated tables."""
    paths = make_figures(args.curves, args.out, args.runs, args.auc_by_snr, args.examples)
    log.info("wrote %d figure files to %s", len(paths), args.out)


def main(argv=None) -> int:
    return run_stage("plot", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
