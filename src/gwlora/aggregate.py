"""Stage `aggregate`: all run records -> tables (CSV, Markdown and LaTeX).

Outputs, in one directory:

* ``runs.csv``: one row per (variant, seed) run, every scalar of its summary;
* ``curves.csv``: every run's evaluation curve, with ``variant`` and ``seed`` columns;
* ``summary.csv``: one row per variant, mean and standard deviation over seeds;
* ``summary.md``: the same table, formatted for reading (mean ± standard
  deviation over seeds; ``summary.csv`` also has the 95% t-interval half-widths);
* ``summary.tex``: the same table in LaTeX (booktabs);
* ``original_study_table.md``: the original study's table shape (trainable parameters,
  memory, val AUC and loss of the tested checkpoint per variant), to read beside the original study's;
* ``auc_by_snr.csv``: per run, the test AUC of the signals in each injection-SNR
  bin against all noise windows (empty when the data has no injections);
* ``shift_runs.csv``: every run's AUC, TPR at the FPR, accuracy at logit 0 and
  Brier score on the in-distribution test split (``test``) and on each shifted
  test set of ``evaluation.test_sets`` (scored by the evaluate stage);
* ``shift.csv``: the same per test set and variant at its selected lr (mean and
  sd over seeds), with the paired test-AUC difference against full fine-tuning
  on that set and its 95% bootstrap interval;
* ``efficiency.csv``: detection efficiency (TPR at the FPR) against injected
  SNR per test set and variant, with exact binomial intervals per seed and their
  spread over seeds (injection data only);
* ``context.csv``: when ``model.context`` lists several contexts (a variant
  axis), per variant and context: test AUC over seeds, the paired difference to
  the reference context (30 s, else the longest listed) with its 95% interval,
  the cost per step against the reference's, whether the context loses no more
  than :data:`CONTEXT_TOLERANCE` of AUC (``yes`` when the interval's low end is
  above -0.005, ``no`` when its high end is below, else ``undecided``), and the
  shortest context that does (``undecided`` when a shorter one's interval cannot
  tell); only the header otherwise;
* ``latency.csv``: per variant (at its selected lr) and batch size (1 and the
  study's eval batch), the inference latency of the base model, of the method
  unmerged and, where peft merges it, merged, with each one's overhead over
  the base (the mean over seeds of each run's own ratio, as the LoRA paper's
  Table 1 reports adapters against the base model);
* ``study.json``: what the study ran, for the deck: the base model's record
  (with its FFN width), each data split's size and labels, each variant's
  configuration, and the software and hardware of the runs. The deck reads
  only this directory and the figures, never run folders or the model;
* ``findings.json``: every verdict, ratio, claim and budget the deck states,
  computed from these tables (:mod:`gwlora.findings`); the deck only prints them.

With ``train.variants.matched-filter`` its run (:mod:`gwlora.matched_filter_stage`) is one more row of
every table (no lr: it is its own selection), and a second baseline: ``differences.csv`` pairs every
variant with it, ``summary.csv`` and ``shift.csv`` gain ``<column>_vs_matched-filter``, ``summary.csv``
its costs (:data:`MATCHED_FILTER_COSTS`), ``shift.csv`` the fraction of injections outside its bank
(``outside_bank``), and ``efficiency.csv`` the oracle's efficiency per bin (``oracle_efficiency``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score

from .base_model import load_record
from .cli import StageError, atomic_file, json_arg, read_json, run_stage, write_json
from .compare import DIFFERENCE_COLUMNS, NOT_CONVERGED, auc_interval, check_predictions, differences_table, pooled_differences, select_lr
from . import families
from .config import SHIFT_PREFIX
from .encoder import context_seconds, context_suffix
from .families.matched_filter import NAME as MATCHED_FILTER
from .findings import BASELINES, IN_DISTRIBUTION, FINDINGS_FILE, findings, write_findings
from .variants import Variant
from .markdown import escape as escape_markdown
from .records import CURVE_FILE, PREDICTIONS_FILE, read_curve, read_predictions, read_summary

log = logging.getLogger("gwlora.aggregate")

# Metrics summarised over seeds: column -> (heading in summary.md, decimals)
METRICS = {
    "val_auc": ("val AUC", 4),
    "best_val_loss": ("val loss", 4),
    "test_auc": ("test AUC", 4),
    "test_tpr_at_fpr": ("test TPR at {fpr:g}% FPR", 3),
    "test_accuracy": ("test accuracy", 3),
    "test_brier": ("test Brier", 4),
    "train_time_s": ("training time (s)", 1),
    "time_to_best_s": ("time to best (s)", 1),
    "step_time_ms": ("step time (ms)", 1),
    "peak_memory_mb": ("peak memory (MiB)", 0),
    "checkpoint_mb": ("checkpoint (MiB)", 2),
    "latency_base_ms": ("latency base (ms)", 1),
    "latency_unmerged_ms": ("latency unmerged (ms)", 1),
    "latency_merged_ms": ("latency merged (ms)", 1),
}


LATENCY_MODES = ("base", "unmerged", "merged")
# What each run's summary says about the sequence the encoder layers saw
SEQUENCE_COLUMNS = ("positions", "audio_positions", "prompt_positions", "audio_seconds_lost")


def load_runs(run_dirs: list[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, curves) tables from run directories holding summary.json and curve.csv."""
    if not run_dirs:
        raise StageError("no runs to aggregate")
    rows, curves = [], []
    for run_dir in map(Path, run_dirs):
        record = read_summary(run_dir).to_json()
        if not (run_dir / CURVE_FILE).exists():
            raise StageError(f"{run_dir} has no {CURVE_FILE}: not a finished run")
        variant = Variant.from_dict(record["variant_config"]).record()
        row = {k: v for k, v in record.items() if not isinstance(v, (dict, list))}
        row.update({column: variant.get(column) for column in families.table_columns()}, lr=variant["lr"])
        axis = variant.get("context")  # set for runs on the context axis only
        row["context_axis"] = axis
        row["base_variant"] = record["variant"].removesuffix(context_suffix(axis)) if axis else record["variant"]
        row["peak_memory_mb"] = record["peak_memory_bytes"] / 2**20
        row["checkpoint_mb"] = record["checkpoint_bytes"] / 2**20
        for mode in LATENCY_MODES:
            row[f"latency_{mode}_ms"] = record["latency_ms"].get(mode, np.nan)  # base only, unless the variant adds or merges
            row[f"latency_{mode}_b1_ms"] = record["latency_ms_batch1"].get(mode, np.nan)
            for key, suffix in (("eval", ""), ("batch1", "_b1")):  # the repetitions' quartiles, for findings' noise rule
                spread = record.get("latency_quartiles_ms", {}).get(key, {}).get(mode, [np.nan, np.nan])
                row[f"latency_{mode}{suffix}_q25_ms"], row[f"latency_{mode}{suffix}_q75_ms"] = spread
        for key in SEQUENCE_COLUMNS:
            row[f"sequence_{key}"] = record["sequence"][key]
        # trained on cached encoder outputs (frozen, partial): its step skips the frozen encoder, no step time to compare
        row["encoder_cache_used"] = bool((record.get("encoder_cache") or {}).get("used", False))
        row["run_dir"] = str(run_dir)
        rows.append(row)
        curve = read_curve(run_dir / CURVE_FILE)
        curve.insert(0, "seed", record["seed"])
        curve.insert(0, "lr", record["lr"])
        curve.insert(0, "variant", record["variant"])
        curves.append(curve)
    runs = pd.DataFrame(rows)
    dupes = runs[runs.duplicated(["variant", "lr", "seed"], keep=False)]
    if len(dupes):
        raise StageError(f"duplicate runs for (variant, lr, seed) {sorted(set(zip(dupes.variant, dupes.lr, dupes.seed)))}")
    runs["_key"] = [families.sort_key(row) for row in runs.to_dict("records")]
    runs = runs.sort_values(["_key", "lr", "seed"]).drop(columns="_key").reset_index(drop=True)
    order = list(dict.fromkeys(runs.variant))
    curves_df = pd.concat(curves, ignore_index=True)
    curves_df["variant"] = pd.Categorical(curves_df["variant"], categories=order, ordered=True)
    curves_df = curves_df.sort_values(["variant", "lr", "seed", "step"]).reset_index(drop=True)
    curves_df["variant"] = curves_df["variant"].astype(str)
    return runs, curves_df


def mark_selected(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """`runs` with a `selected` column: each variant's lr chosen on validation only (:func:`gwlora.compare.select_lr`)."""
    untrained = runs.lr.isna()  # the matched filter: nothing trained, no lr to select, its one run is its row
    validation = runs.loc[~untrained, ["variant", "lr", "seed", "best_val_loss", "val_auc"]].rename(columns={"best_val_loss": "val_loss"})
    chosen = select_lr(validation, metric)
    picked = set(zip(chosen.variant, chosen.lr))
    for row in chosen.itertuples():
        if row.n_lrs > 1:
            log.info("%s: lr %g selected of %d by mean %s over %d seed(s)%s", row.variant, row.lr, row.n_lrs, metric, row.n_seeds,
                     f", at the {row.grid_edge} edge of its grid" if row.grid_edge else "")
    edge = dict(zip(chosen.variant, chosen.grid_edge))  # of the variant's selected lr: the same on each of its rows
    return runs.assign(selected=np.array([(v, lr) in picked for v, lr in zip(runs.variant, runs.lr)]) | untrained.to_numpy(), lr_grid_edge=runs.variant.map(edge))


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Per-variant mean and standard deviation over seeds of the selected lr's runs, in display order."""
    lrs_tried = runs.groupby("variant", sort=False)["lr"].nunique()
    runs = runs[runs.selected]
    order = list(dict.fromkeys(runs.variant))
    grouped = runs.groupby("variant", sort=False)
    same_in_every_seed = ("lr", "lr_grid_edge", "family", "config_key", *families.table_columns(), "sequence_positions",
                          "sequence_audio_positions")
    out = grouped.agg(
        **{column: (column, "first") for column in same_in_every_seed},
        audio_seconds_lost=("sequence_audio_seconds_lost", "first"),
        seeds=("seed", "nunique"),
        **{column: (column, "first") for column in ("trainable_parameters", "trainable_percent", "tpr_fpr")},
        **{column: (column, "sum") for column in ("did_not_learn", "still_improving")},  # runs flagged, of the seeds
        **({"encoder_cache_used": ("encoder_cache_used", "max")} if "encoder_cache_used" in runs else {}),  # a run of an earlier version: none
    )
    out["lrs_tried"] = lrs_tried
    full = runs.loc[runs.family == "full", "trainable_parameters"]
    out["trainable_vs_full_percent"] = 100.0 * out["trainable_parameters"] / full.iloc[0] if len(full) else np.nan
    n = grouped["seed"].count()
    t95 = pd.Series(stats.t.ppf(0.975, np.maximum(n - 1, 1)), index=n.index).where(n > 1)
    for col in METRICS:
        out[col] = grouped[col].mean()
        out[f"{col}_std"] = grouped[col].std(ddof=1) if n.max() > 1 else np.nan
        out[f"{col}_ci95"] = t95 * out[f"{col}_std"] / np.sqrt(n)  # half-width of the 95% t interval
    return out.loc[order].reset_index()


LATENCY_COLUMNS = ["variant", "family", "batch", "seeds", "base_ms", "unmerged_ms", "merged_ms",
                   "unmerged_overhead_percent", "unmerged_overhead_percent_std", "merged_overhead_percent", "merged_overhead_percent_std"]


def latency_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Inference latency per variant (selected lr) at batch 1 and at the study's eval batch: mean ms over seeds, overhead over the base.

    A run's overhead is its method's time over its own base time (both timed in
    the same process, one after the other), averaged over seeds.
    """
    runs = runs[runs.selected]
    rows = []
    for variant, group in runs.groupby("variant", sort=False):
        for batch, suffix in ((1, "_b1"), (int(group.latency_batch.iloc[0]), "")):
            base = group[f"latency_base{suffix}_ms"]
            if base.isna().all():
                continue  # not timed (train.latency_batches 0, or a record without batch-1 timings)
            row = {"variant": variant, "family": group.family.iloc[0], "batch": batch, "seeds": int(base.notna().sum()), "base_ms": base.mean()}
            for mode in ("unmerged", "merged"):
                ms = group[f"latency_{mode}{suffix}_ms"]
                overhead = 100 * (ms / base - 1)
                row[f"{mode}_ms"] = ms.mean()
                row[f"{mode}_overhead_percent"] = overhead.mean()
                row[f"{mode}_overhead_percent_std"] = overhead.std(ddof=1) if overhead.notna().sum() > 1 else np.nan
            rows.append(row)
    return pd.DataFrame(rows, columns=LATENCY_COLUMNS)


def _fmt(mean: float, std: float, decimals: int) -> str:
    if pd.isna(mean):
        return "n/a"
    text = f"{mean:,.{decimals}f}"
    return text if pd.isna(std) else f"{text} ± {std:,.{decimals}f}"


def format_parameters(n: float) -> str:
    """An exact parameter count with thousands separators (one format for every size)."""
    return f"{int(n):,}"


# Column groups that fit one slide each (the deck shows them on three slides)
QUALITY_METRICS = ("val_auc", "best_val_loss", "test_auc")
CALIBRATION_METRICS = ("test_tpr_at_fpr", "test_accuracy", "test_brier")  # detection and calibration, beside the runs that did not learn
COST_METRICS = tuple(m for m in METRICS if m not in QUALITY_METRICS + CALIBRATION_METRICS)


def display_table(summary: pd.DataFrame, metrics: tuple[str, ...] = tuple(METRICS), parameters: bool = True, learned: bool = True) -> pd.DataFrame:
    """Per-variant table (mean ± sd over seeds, as text) of `metrics`, with the parameter counts when `parameters`
    and the number of runs that did not learn when `learned`."""
    columns = {"variant": summary["variant"], "seeds": summary["seeds"]}
    if learned:  # runs flagged by gwlora.scoring.learning_problems, beside the quality they would otherwise pass for
        for name, column in (("did not learn", "did_not_learn"), ("still improving", "still_improving")):
            columns[name] = [f"{n:.0f} of {k}" if n else "none" for n, k in zip(summary[column], summary["seeds"])]
    columns["lr"] = ["none" if pd.isna(lr) else f"{lr:g}" + (f" (best of {n}{f'; {edge} edge' if edge else ''})" if n > 1 else "")
                     for lr, n, edge in zip(summary["lr"], summary["lrs_tried"], summary["lr_grid_edge"].astype(object).fillna(""))]
    if parameters:
        columns["trainable params"] = summary["trainable_parameters"].map(format_parameters)
        columns["% of full"] = summary["trainable_vs_full_percent"].map(lambda v: "n/a" if pd.isna(v) else f"{v:.2f}%")
    for col in metrics:
        heading, decimals = METRICS[col]
        columns[heading.format(fpr=100 * summary["tpr_fpr"].iloc[0])] = [
            _fmt(m, s, decimals) for m, s in zip(summary[col], summary[f"{col}_std"])
        ]
        if col == "test_auc" and "delta_vs_full" in summary and summary["delta_vs_full"].notna().any():
            columns["Δ test AUC vs full (95% CI)"] = [
                "n/a" if pd.isna(d) else f"{d:+.4f} ({lo:+.4f} to {hi:+.4f})"
                for d, lo, hi in zip(summary["delta_vs_full"], summary["ci_low_vs_full"], summary["ci_high_vs_full"])
            ]
    return pd.DataFrame(columns)


def markdown_table(summary: pd.DataFrame, metrics: tuple[str, ...] = tuple(METRICS), parameters: bool = True, learned: bool = True) -> str:
    """The display table as a Markdown pipe table; variant names (from the config) are escaped to literal text."""
    table = display_table(summary, metrics, parameters, learned)
    table["variant"] = table["variant"].map(escape_markdown)
    return table.to_markdown(index=False, colalign=["left"] + ["right"] * (table.shape[1] - 1), disable_numparse=True) + "\n"


SNR_BINS = 4  # equal-count bins of the test signals' injection SNR (AUC by SNR)
AUC_BY_SNR_COLUMNS = ["variant", "seed", "snr_bin", "snr_low", "snr_high", "snr_median", "n_signal", "n_noise", "auc"]


def snr_bins(snr, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal-count SNR bins of the signals `snr`: (edges, the bin of each signal), edges the quantiles of their SNR
    (fewer bins when quantiles coincide), the highest SNR in the last bin."""
    snr = np.asarray(snr, dtype=float)
    edges = np.unique(np.quantile(snr, np.linspace(0, 1, bins + 1)))
    return edges, snr_bin_of(edges, snr)


def snr_bin_of(edges: np.ndarray, snr) -> np.ndarray:
    """The bin of each SNR in `snr` among `edges` (values beyond the edges go to the first or last bin)."""
    return np.clip(np.searchsorted(edges, np.asarray(snr, dtype=float), side="right") - 1, 0, len(edges) - 2)


def load_predictions(runs: pd.DataFrame, test_set: str | None = None) -> dict[tuple[str, int], pd.DataFrame]:
    """Every run's predictions.csv (of its test split, or of shifted test set `test_set`), keyed by (variant, seed), in the order of `runs`."""
    predictions = {}
    for variant, seed, run_dir in zip(runs.variant, runs.seed, runs.run_dir):
        path = Path(run_dir) / (PREDICTIONS_FILE if test_set is None else f"shift/{test_set}/{PREDICTIONS_FILE}")
        if not path.exists():
            missing = "not a finished run" if test_set is None else f"run the evaluate stage for test set {test_set!r}"
            raise StageError(f"{path} is missing: {missing}")
        predictions[variant, int(seed)] = read_predictions(path)
    return predictions


def auc_by_snr(predictions: dict[tuple[str, int], pd.DataFrame]) -> pd.DataFrame:
    """Test AUC of each injection-SNR bin's signals against every noise window, per run ((variant, seed) -> predictions).

    Every run scores the same test windows, so the bins (quantiles of the
    signals' SNR) are the same for all; data without injections gives no rows.
    """
    rows = []
    edges = None
    for (variant, seed), pred in predictions.items():
        signal, noise = pred[pred.label == 1], pred[pred.label == 0]
        if signal.empty or noise.empty or not (signal.snr > 0).any():
            continue
        if edges is None:
            edges = snr_bins(signal.snr, SNR_BINS)[0]
        which = snr_bin_of(edges, signal.snr)
        for b in range(len(edges) - 1):
            in_bin = signal[which == b]
            if in_bin.empty:
                continue
            labels = np.r_[np.ones(len(in_bin)), np.zeros(len(noise))]
            auc = roc_auc_score(labels, np.r_[in_bin.logit, noise.logit])
            rows.append([variant, seed, b, edges[b], edges[b + 1], in_bin.snr.median(), len(in_bin), len(noise), auc])
    return pd.DataFrame(rows, columns=AUC_BY_SNR_COLUMNS)


# What the deck states about each data split (from the dataset stage's build.json)
SPLIT_FACTS = ("split", "source", "detectors", "n_windows", "n_signal", "label_names")


def study_record(run_dirs: list[str | Path], model_dir: str | Path, data_dirs: list[str | Path]) -> dict:
    """The facts of the study the deck states besides the tables: base model, data splits, variant configs, environment."""
    summaries = [read_summary(d) for d in run_dirs]
    model_dir = Path(model_dir)
    base = {**load_record(model_dir), "encoder_ffn_dim": read_json(model_dir / "config.json")["encoder_ffn_dim"]}
    data = {}
    for d in map(Path, data_dirs):
        build = read_json(d / "build.json")
        name = SHIFT_PREFIX + build["test_set"] if "test_set" in build else build["split"]  # a shifted test set, or a split
        data[name] = {k: build[k] for k in SPLIT_FACTS if k in build}
    first = summaries[0]
    return {
        "base_model": base,
        "data": data,
        "variants": {s.identity.variant: Variant.from_dict(s.identity.variant_config).record() for s in summaries},
        "environment": {
            "versions": first.provenance.versions,
            "hardware": first.provenance.hardware,
            "git_commits": sorted({str(s.provenance.git_commit) for s in summaries}),
        },
    }


CONTEXT_TOLERANCE = 0.005  # test AUC a shorter context may lose against the reference and still count as lossless
CONTEXT_COLUMNS = ["variant", "context", "seeds", "test_auc", "test_auc_std", "reference", "delta_vs_reference", "ci_low", "ci_high",
                   "step_time_ms", "step_cost_vs_reference", "within_tolerance", "shortest_within_tolerance"]


def context_order(context: str) -> float:
    """Shortest first: clip (never longer than a listed duration: the config checks), then the durations."""
    seconds = context_seconds(context)
    return 0.0 if seconds is None else seconds


def within_tolerance(ci_low: float, ci_high: float, tolerance: float = CONTEXT_TOLERANCE) -> str:
    """Whether an AUC difference to the reference is no worse than -`tolerance`: yes, no, or undecided by its interval."""
    if ci_low >= -tolerance:
        return "yes"
    if ci_high < -tolerance:
        return "no"
    return "undecided"


def context_table(runs: pd.DataFrame, predictions: dict[tuple[str, int], pd.DataFrame]) -> pd.DataFrame:
    """Per variant on the context axis and context: test AUC, paired Δ to the reference context, cost per step, the shortest lossless one.

    `runs` are the selected runs (with ``context_axis`` and ``base_variant``);
    the reference is 30 s when listed, else the longest context.
    """
    axis = runs[runs.context_axis.notna()] if "context_axis" in runs else runs.iloc[:0]
    rows = []
    for base, group in axis.groupby("base_variant", sort=False):
        listed = sorted(group.context_axis.unique(), key=context_order)
        reference = "30s" if "30s" in listed else listed[-1]
        name = {c: base + context_suffix(c) for c in listed}
        pairs = [(name[c], name[reference]) for c in listed if c != reference]
        diffs = differences_table({k: v for k, v in predictions.items() if k[0] in name.values()}, pairs,
                                  n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED) if pairs else pd.DataFrame(columns=DIFFERENCE_COLUMNS)
        pooled = pooled_differences(diffs, name[reference]) if len(diffs) else diffs
        step = group.groupby("context_axis").step_time_ms.mean()
        verdicts = {}
        for c in listed:
            runs_c = group[group.context_axis == c]
            row = {"variant": base, "context": c, "seeds": runs_c.seed.nunique(), "test_auc": runs_c.test_auc.mean(),
                   "test_auc_std": runs_c.test_auc.std(ddof=1), "reference": reference, "step_time_ms": step[c],
                   "step_cost_vs_reference": step[c] / step[reference]}
            if c == reference:
                row.update(delta_vs_reference=0.0, ci_low=0.0, ci_high=0.0, within_tolerance="reference")
            else:
                d = pooled.loc[name[c]]
                verdicts[c] = within_tolerance(d.ci_low, d.ci_high)
                row.update(delta_vs_reference=d.delta, ci_low=d.ci_low, ci_high=d.ci_high, within_tolerance=verdicts[c])
            rows.append(row)
        shortest = reference
        for c in listed[:-1] if listed[-1] == reference else [c for c in listed if c != reference]:
            if verdicts[c] == "no":
                continue
            shortest = c if verdicts[c] == "yes" else "undecided"
            break
        for row in rows[len(rows) - len(listed):]:
            row["shortest_within_tolerance"] = shortest
    return pd.DataFrame(rows, columns=CONTEXT_COLUMNS)


BOOTSTRAP_RESAMPLES = 2000  # paired bootstrap over test windows, stratified by label (gwlora.compare)
BOOTSTRAP_SEED = 0


def differences(predictions: dict[tuple[str, int], pd.DataFrame], runs: pd.DataFrame) -> pd.DataFrame:
    """Paired test-AUC differences of every variant (at its selected lr) against full fine-tuning and the frozen encoder,
    "not converged" where a side did not learn or was still improving (:func:`with_convergence`)."""
    variants = list(dict.fromkeys(v for v, _ in predictions))
    pairs = [(v, b) for b in (*BASELINES, MATCHED_FILTER) if b in variants for v in variants if v != b]
    if not pairs:
        return pd.DataFrame(columns=[*DIFFERENCE_COLUMNS, "unconverged"])
    return with_convergence(differences_table(predictions, pairs, n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED), runs)


CONVERGENCE_FLAGS = {"did_not_learn": "did not learn", "still_improving": "still improving"}  # a run's flags that void a verdict


def with_convergence(diffs: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """`diffs` whose verdict is "not converged" where a side's selected runs of the compared seeds (a per-seed row's
    seed, a pooled row's shared seeds) did not learn or were still improving: a verdict about the budget, not the
    methods. ``unconverged`` says which side and why (empty where both converged); the interval stays as measured."""
    selected = runs[runs.selected].set_index(["variant", "seed"])
    out = diffs.copy()
    reasons = []
    for row in out.itertuples():
        pair = out[(out.variant == row.variant) & (out.baseline == row.baseline) & (out.seed.astype(str) != "pooled")]
        seeds = sorted(set(pair.seed)) if str(row.seed) == "pooled" else [row.seed]
        of = f"of {len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
        parts = []
        for side in (row.variant, row.baseline):
            flags = selected.loc[[(side, s) for s in seeds if (side, s) in selected.index], list(CONVERGENCE_FLAGS)].astype(bool)
            counts = [f"{word} in {int(flags[flag].sum())} {of}" for flag, word in CONVERGENCE_FLAGS.items() if flags[flag].any()]
            if counts:
                parts.append(f"{side} {', '.join(counts)}")
        reasons.append("; ".join(parts))
    out["unconverged"] = reasons
    out.loc[out.unconverged != "", "verdict"] = NOT_CONVERGED
    return out


def with_differences(summary: pd.DataFrame, diffs: pd.DataFrame, baseline: str = "full") -> pd.DataFrame:
    """`summary` with each variant's pooled paired Δ test AUC against `baseline` and its 95% interval."""
    pooled = pooled_differences(diffs, baseline)
    out = summary.copy()
    for column in ("delta", "ci_low", "ci_high", "verdict", "unconverged"):
        out[f"{column}_vs_{baseline}"] = out.variant.map(pooled[column]) if len(pooled) else np.nan
    return out


# --------------------------------------------------------------------------- shifted test sets

SHIFT_METRICS = ("auc", "tpr_at_fpr", "accuracy", "brier")
SHIFT_RUN_COLUMNS = ["test_set", "variant", "lr", "seed", "selected", *SHIFT_METRICS, "one_class", "did_not_learn"]
EFFICIENCY_BINS = 5  # equal-count bins of a test set's injected SNR
EFFICIENCY_COLUMNS = ["test_set", "variant", "snr_bin", "snr_low", "snr_high", "snr_median", "n_signal", "seeds",
                      "threshold_fpr", "efficiency", "ci_low", "ci_high", "seed_min", "seed_max"]


def shift_predictions(runs: pd.DataFrame, test_sets: list[str]) -> dict[str, dict[tuple[str, int], pd.DataFrame]]:
    """Per test set (the in-distribution test split first), each selected run's predictions, keyed by (variant, seed)."""
    selected = runs[runs.selected]
    return {IN_DISTRIBUTION: load_predictions(selected), **{name: load_predictions(selected, name) for name in test_sets}}


def shift_runs(runs: pd.DataFrame, test_sets: list[str]) -> pd.DataFrame:
    """Every run's scores on every test set (in-distribution from its summary, shifted from the evaluate stage's metrics.json)."""
    rows = []
    for run in runs.itertuples():
        rows.append([IN_DISTRIBUTION, run.variant, run.lr, run.seed, run.selected, run.test_auc, run.test_tpr_at_fpr,
                     run.test_accuracy, run.test_brier, run.test_one_class, run.did_not_learn])
        for name in test_sets:
            path = Path(run.run_dir) / "shift" / name / "metrics.json"
            if not path.exists():
                raise StageError(f"{path} is missing: run the evaluate stage for test set {name!r}")
            m = read_json(path)
            rows.append([name, run.variant, run.lr, run.seed, run.selected, *(m[k] for k in SHIFT_METRICS), m["one_class"], run.did_not_learn])
    return pd.DataFrame(rows, columns=SHIFT_RUN_COLUMNS)


def shift_table(scores: pd.DataFrame, predictions: dict[str, dict], runs: pd.DataFrame, baseline: str = "full") -> pd.DataFrame:
    """Per test set and variant (at its selected lr): mean and sd over seeds of AUC, TPR, accuracy and Brier score,
    the AUC's 95% bootstrap interval (``above_chance`` when it excludes 0.5), and the paired test-AUC
    difference against `baseline` on that set with its 95% bootstrap interval."""
    chosen = scores[scores.selected]
    grouped = chosen.groupby(["test_set", "variant"], sort=False)
    out = grouped.agg(lr=("lr", "first"), seeds=("seed", "nunique"), one_class=("one_class", "sum"), did_not_learn=("did_not_learn", "sum"))
    for metric in SHIFT_METRICS:
        out[metric] = grouped[metric].mean()
        out[f"{metric}_std"] = grouped[metric].std(ddof=1)
    out = out.reset_index()
    out["auc_ci_low"], out["auc_ci_high"], out["above_chance"] = np.nan, np.nan, None
    for name, by_run in predictions.items():
        labels, logits = check_predictions(by_run)
        for variant in dict.fromkeys(v for v, _ in by_run):
            ci = auc_interval(labels, [x for (v, _), x in logits.items() if v == variant], n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED)
            at = (out.test_set == name) & (out.variant == variant)
            out.loc[at, ["auc_ci_low", "auc_ci_high"]] = ci["ci_low"], ci["ci_high"]
            out.loc[at, "above_chance"] = ci["above_chance"]
    return with_shift_differences(out, predictions, runs, baseline)


def with_shift_differences(shift: pd.DataFrame, predictions: dict[str, dict], runs: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """`shift` (:func:`shift_table`) with each variant's pooled paired test-AUC difference against `baseline` on each
    test set, its 95% bootstrap interval and verdict (columns ``<column>_vs_<baseline>``; empty without that baseline)."""
    out = shift.copy()
    for column in ("delta", "ci_low", "ci_high", "verdict", "unconverged"):
        out[f"{column}_vs_{baseline}"] = np.nan if column not in ("verdict", "unconverged") else None
    for name, by_run in predictions.items():
        variants = list(dict.fromkeys(v for v, _ in by_run))
        if baseline not in variants:
            continue
        pairs = [(v, baseline) for v in variants if v != baseline]
        table = with_convergence(differences_table(by_run, pairs, n_resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED), runs)
        pooled = pooled_differences(table, baseline)
        for variant, row in pooled.iterrows():
            at = (out.test_set == name) & (out.variant == variant)
            for column in ("delta", "ci_low", "ci_high", "verdict", "unconverged"):
                out.loc[at, f"{column}_vs_{baseline}"] = row[column]
    return out


def _binomial_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact) interval of `k` successes in `n` trials: one run's detected count in one SNR bin.

    `k` must be a count, never a mean over seeds: a mean is not a binomial count, and its interval has no coverage.
    """
    if int(k) != k or not 0 <= k <= n:
        raise StageError(f"a binomial interval needs a whole count of successes between 0 and {n}, not {k}")
    ci = stats.binomtest(int(k), n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def _detected_counts(pred: pd.DataFrame, fpr: float, edges: np.ndarray) -> np.ndarray:
    """One run's detected signals per SNR bin, at the threshold that lets `fpr` of its noise windows through."""
    noise, signal = pred.logit[pred.label == 0].to_numpy(), pred[pred.label == 1]
    threshold = np.quantile(noise, 1 - fpr, method="higher")
    in_bin = snr_bin_of(edges, signal.snr)
    return np.array([(signal.logit.to_numpy()[in_bin == b] > threshold).sum() for b in range(len(edges) - 1)])


def _seed_spread(counts: np.ndarray, n: int) -> list[float]:
    """efficiency (mean over seeds), ci_low, ci_high (the envelope of the seeds' exact intervals), seed_min, seed_max."""
    intervals = np.array([_binomial_interval(k, n) for k in counts])
    fractions = counts / n
    return [float(fractions.mean()), float(intervals[:, 0].min()), float(intervals[:, 1].max()),
            float(fractions.min()), float(fractions.max())]


def efficiency(predictions: dict[str, dict], fpr: float) -> pd.DataFrame:
    """Detection efficiency against injected SNR per test set and variant: the fraction of signals above the
    threshold that lets `fpr` of the set's noise windows through (the (1 - fpr) quantile of their logits), in
    equal-count SNR bins. Test sets without injected SNRs (audio) give no rows.

    Intervals are computed per seed and then spread, never on a count averaged over seeds (not a binomial count).
    Each seed's run detects a whole number k of the bin's n signals: a binomial count with its exact
    Clopper-Pearson interval (scipy.stats.binomtest). Pooling k and n over seeds was rejected because every
    seed scores the same windows, so the pooled n would count each window once per seed and narrow the interval
    by up to sqrt(seeds). A row reports `efficiency` (the seeds' mean fraction), `ci_low` / `ci_high` (the
    envelope of the seeds' 95% intervals: the lowest lower bound and the highest upper bound, so the bars cover
    both the bin's sampling and the seeds' spread; with one seed, that seed's exact interval) and
    `seed_min` / `seed_max` (the lowest and highest seed's fraction)."""
    rows = []
    for name, by_run in predictions.items():
        first = next(iter(by_run.values()))
        signal_snr = first.snr[first.label == 1].to_numpy()
        if not len(signal_snr) or not (signal_snr > 0).any() or (first.label == 0).sum() == 0:
            continue
        edges, which = snr_bins(signal_snr, EFFICIENCY_BINS)
        detected: dict[str, list[np.ndarray]] = {}
        for (variant, _), pred in by_run.items():
            detected.setdefault(variant, []).append(_detected_counts(pred, fpr, edges))
        for variant, counts in detected.items():
            for b in range(len(edges) - 1):
                n = int((which == b).sum())
                if n:
                    rows.append([name, variant, b, edges[b], edges[b + 1], float(np.median(signal_snr[which == b])), n, len(counts), fpr,
                                 *_seed_spread(np.array(counts)[:, b], n)])
    return pd.DataFrame(rows, columns=EFFICIENCY_COLUMNS)


# --------------------------------------------------------------------------- the optimal detector (train.variants.matched-filter)

MATCHED_FILTER_COSTS = ("bank_size", "minimal_match", "bank_placement_s", "windows_per_s")  # summary.csv columns, its row only


def matched_filter_record(runs: pd.DataFrame) -> dict | None:
    """The matched filter's matched_filter.json (bank, throughput, the oracle's trials per test set), or None without one."""
    from .matched_filter_stage import RECORD_FILE

    rows = runs[runs.family == MATCHED_FILTER]
    if rows.empty:
        return None
    path = Path(rows.run_dir.iloc[0]) / RECORD_FILE
    if not path.is_file():
        raise StageError(f"{path} is missing: run the matched_filter rule again")
    return read_json(path)


def with_matched_filter(summary: pd.DataFrame, shift: pd.DataFrame, record: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """summary.csv with the search's costs (:data:`MATCHED_FILTER_COSTS`) on its row, and shift.csv with the fraction
    of each test set's injections whose masses lie outside its bank's range (``outside_bank``), NaN elsewhere."""
    summary, shift = summary.copy(), shift.copy()
    own = summary.family == MATCHED_FILTER
    for column in MATCHED_FILTER_COSTS:
        summary[column] = np.where(own, record[column], np.nan)
    shift["outside_bank"] = np.nan
    for name, facts in record["sets"].items():
        at = (shift.test_set == name) & (shift.variant == MATCHED_FILTER)
        shift.loc[at, "outside_bank"] = facts["outside_bank"] / max(1, facts["n_signal"])
    return summary, shift


def with_oracle(eff: pd.DataFrame, predictions: dict[str, dict], record: dict | None) -> pd.DataFrame:
    """efficiency.csv with ``oracle_efficiency``: per test set and SNR bin, the mean detection probability of its signals
    for a search that knows each signal's template (:func:`gwlora.matched_filter.oracle_efficiency` at the table's FPR,
    its noise trials measured by the matched filter on the set's noise windows); `eff` unchanged without a matched filter."""
    if record is None:
        return eff
    out = eff.assign(oracle_efficiency=np.nan)
    from .matched_filter import oracle_efficiency

    for name, by_run in predictions.items():
        facts = record["sets"].get(name)
        if facts is None or not (out.test_set == name).any():
            continue
        first = next(iter(by_run.values()))
        signal_snr = first.snr[first.label == 1].to_numpy()
        edges, which = snr_bins(signal_snr, EFFICIENCY_BINS)
        chance = oracle_efficiency(signal_snr, float(out.threshold_fpr.iloc[0]), facts["oracle_trials"], facts["n_detectors"])
        for b in range(len(edges) - 1):
            if (which == b).any():
                out.loc[(out.test_set == name) & (out.snr_bin == b), "oracle_efficiency"] = chance[which == b].mean()
    return out


def stage_config(config: dict) -> dict:
    """The parts of the validated workflow config the aggregate stage reads (so a change elsewhere does not re-run it)."""
    return {"data": config["data"], "evaluation": config["evaluation"], "model": {"context": config["model"]["context"]},
            "train": {key: config["train"][key] for key in ("lr_selection", "schedule")}}


def aggregate(run_dirs: list[str | Path], out_dir: str | Path, model_dir: str | Path, data_dirs: list[str | Path], config: dict) -> pd.DataFrame:
    """Every table of the module docstring and ``findings.json`` (:mod:`gwlora.findings`) into `out_dir`, for the
    validated workflow `config` (its ``train.lr_selection`` picks each variant's lr; its ``evaluation.test_sets`` were scored)."""
    test_sets = list(config["evaluation"]["test_sets"])
    runs, curves = load_runs(run_dirs)
    runs = mark_selected(runs, config["train"]["lr_selection"])
    by_test_set = shift_predictions(runs, test_sets)  # read once, for the differences, the SNR bins and the shift tables
    predictions = by_test_set[IN_DISTRIBUTION]
    diffs = differences(predictions, runs)
    summary = with_differences(summarise(runs), diffs)
    scores = shift_runs(runs, test_sets)
    shift = shift_table(scores, by_test_set, runs)
    search = matched_filter_record(runs)
    if search is not None:  # the optimal detector: a second baseline, its costs and the injections beyond its bank
        summary, shift = with_matched_filter(with_differences(summary, diffs, MATCHED_FILTER),
                                             with_shift_differences(shift, by_test_set, runs, MATCHED_FILTER), search)
    out_dir = Path(out_dir)
    study = study_record(run_dirs, model_dir, data_dirs)
    write_json(out_dir / "study.json", study)
    curves = curves.merge(runs[["variant", "lr", "seed", "selected"]], on=["variant", "lr", "seed"])
    curves = curves[curves.selected].drop(columns="selected")  # the variants' curves: at the selected lr
    tables = {"runs": runs, "curves": curves, "summary": summary, "differences": diffs, "auc_by_snr": auc_by_snr(predictions),
              "shift_runs": scores, "shift": shift,
              "efficiency": with_oracle(efficiency(by_test_set, float(runs.tpr_fpr.iloc[0])), by_test_set, search),
              "context": context_table(runs[runs.selected], predictions), "latency": latency_table(runs)}
    for name, frame in tables.items():
        with atomic_file(out_dir / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
    with atomic_file(out_dir / "summary.md") as tmp:
        tmp.write_text(markdown_table(summary))
    with atomic_file(out_dir / "summary.tex") as tmp:
        tmp.write_text(latex_table(display_table(summary)))
    with atomic_file(out_dir / "original_study_table.md") as tmp:
        tmp.write_text(markdown_table(summary, ORIGINAL_STUDY_METRICS))
    write_findings(out_dir / FINDINGS_FILE, findings(tables, study, config))
    return summary


# The original study's table: trainable parameters, memory, val AUC and val loss per variant
ORIGINAL_STUDY_METRICS = ("peak_memory_mb", "val_auc", "best_val_loss")


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                   "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$"}


def latex_text(value) -> str:
    """`value` as literal LaTeX text (its special characters escaped, ± as math)."""
    return "".join(_LATEX_SPECIALS.get(c, c) for c in str(value))


def latex_table(table: pd.DataFrame) -> str:
    """A booktabs LaTeX table of the display table (every cell and heading escaped)."""
    table = table.rename(columns=latex_text).map(latex_text)
    return table.to_latex(index=False, escape=False, column_format="l" + "r" * (table.shape[1] - 1))


def _parser(p):
    p.add_argument("runs", nargs="+", help="run directories (each with summary.json and curve.csv)")
    p.add_argument("--model", required=True, help="base model directory (its base_model.json and config.json)")
    p.add_argument("--data", nargs="+", required=True, help="dataset split directories (their build.json)")
    p.add_argument("--config", type=json_arg, required=True,
                   help="the validated workflow config, as JSON (train.lr_selection, evaluation.test_sets, and what the findings state)")
    p.add_argument("--out", required=True, help="output directory of the tables")


def _run(args):
    """Aggregate run records into summary tables."""
    summary = aggregate(args.runs, args.out, args.model, args.data, args.config)
    log.info("wrote tables of %d variants over %d runs to %s", len(summary), len(args.runs), args.out)


def main(argv=None) -> int:
    return run_stage("aggregate", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
