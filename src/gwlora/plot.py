"""Stage `plot`: the presentation's figures from the aggregated curves (seaborn).

* ``val_auc_vs_time.{png,svg}``: validation AUC against cumulative training time;
* ``val_loss_vs_time.{png,svg}``: validation loss against cumulative training time.

One colour per variant, the same in every figure; one line per seed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .cli import StageError, atomic_file, run_stage  # noqa: E402

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


def plot_curves(curves: pd.DataFrame, y: str, ylabel: str, palette: dict) -> plt.Figure:
    sns.set_theme(context="talk", style="whitegrid")
    fig, ax = plt.subplots(figsize=(10, 6), layout="constrained")
    sns.lineplot(
        data=curves, x="train_time_s", y=y, hue="variant", hue_order=list(palette), palette=palette,
        units="seed", estimator=None, marker="o", markersize=6, linewidth=2, ax=ax,
    )
    ax.set_xlabel("cumulative training time (s)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel[0].upper()}{ylabel[1:]} vs training time")
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


def make_figures(curves_csv: str | Path, out_dir: str | Path) -> list[Path]:
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
    return paths


def _parser(p):
    p.add_argument("--curves", required=True, help="curves.csv written by the aggregate stage")
    p.add_argument("--out", required=True, help="output directory of the figures")


def _run(args):
    """Plot validation AUC and loss against training time."""
    paths = make_figures(args.curves, args.out)
    log.info("wrote %d figure files to %s", len(paths), args.out)


def main(argv=None) -> int:
    return run_stage("plot", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
