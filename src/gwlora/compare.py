"""Selecting learning rates on validation only, and paired comparisons of variants on the shared test windows.

* :func:`select_lr` picks each variant's learning rate from validation
  metrics alone: it refuses any table with a column besides
  :data:`VALIDATION_COLUMNS`, so no test number can sway the choice.
* :func:`paired_auc_difference` and :func:`pooled_auc_difference` bootstrap
  the difference of two models' test AUCs over the test windows that every run
  scores. The bootstrap is paired (each resample evaluates both models on the
  same windows) and stratified by label (positives and negatives are resampled
  separately, each to its own count, so every resample has the test split's
  class balance and a defined AUC).
* :func:`differences_table` runs them for pairs of variants, per seed and
  pooled over seeds; :func:`verdict` turns an interval into the word the
  tables use (:func:`gwlora.findings.describe` into the slides' sentence).
"""

from __future__ import annotations

import inspect
import logging
import warnings

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score

from .cli import StageError

log = logging.getLogger("gwlora.compare")

# The only columns select_lr accepts: one row per run, the validation metrics of its tested checkpoint
VALIDATION_COLUMNS = ("variant", "lr", "seed", "val_loss", "val_auc")
# metric -> whether lower is better
LR_METRICS = {"val_loss": True, "val_auc": False}
SELECT_LR_COLUMNS = ["variant", "lr", "metric", "value", "n_lrs", "n_seeds", "grid_edge"]
DIFFERENCE_COLUMNS = ["variant", "baseline", "seed", "delta", "ci_low", "ci_high", "seed_sd", "n_seeds", "n_resamples", "verdict"]
NOT_CONVERGED = "not converged"  # the verdict of a comparison a side of which did not learn or was still improving
PREDICTION_COLUMNS = ("window", "label", "logit")

# Bootstrap work arrays hold about this many elements per model (bounds memory for large test splits)
_BATCH_ELEMENTS = 2**19
# scipy >= 1.15 takes `rng`; older versions `random_state`
_RNG_KEYWORD = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


def select_lr(validation: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Each variant's learning rate with the best mean validation `metric` over seeds.

    `validation` has exactly the columns :data:`VALIDATION_COLUMNS`, one row per
    run; any other column (a test metric above all) is refused. `metric` is
    the config's ``train.lr_selection`` (the schema holds its default): ``val_loss``
    picks the lowest mean, ``val_auc`` the highest. Ties go to the smaller lr. A
    NaN in any of an lr's seeds makes its mean NaN, and a NaN mean never wins,
    unless every lr's mean is NaN: then the smallest lr, with a warning.

    Returns one row per variant, in order of first appearance: variant, lr
    (selected), metric, value (its mean over seeds), n_lrs (lrs tried),
    n_seeds (runs at the selected lr), grid_edge (``lower`` or ``upper`` when
    the selected lr is the smallest or largest of two or more tried, where a
    rate outside the grid may do better; else empty).
    """
    if metric not in LR_METRICS:
        raise StageError(f"select_lr: metric {metric!r} is not one of {sorted(LR_METRICS)}")
    extra = [c for c in validation.columns if c not in VALIDATION_COLUMNS]
    if extra:
        raise StageError(
            f"select_lr chooses learning rates on validation metrics only; refusing the columns {extra} "
            f"(pass exactly {list(VALIDATION_COLUMNS)})"
        )
    missing = [c for c in VALIDATION_COLUMNS if c not in validation.columns]
    if missing:
        raise StageError(f"select_lr: the validation table lacks the columns {missing}")
    if validation.empty:
        raise StageError("select_lr: the validation table has no runs")
    table = validation.copy()
    for col in ("lr", "val_loss", "val_auc"):
        try:
            table[col] = pd.to_numeric(table[col]).astype(float)
        except (TypeError, ValueError) as exc:
            raise StageError(f"select_lr: column {col!r} is not numeric ({exc})") from None
    if table["lr"].isna().any():
        bad = sorted(set(table.loc[table["lr"].isna(), "variant"]))
        raise StageError(f"select_lr: runs of {bad} have no learning rate")
    dupes = table[table.duplicated(["variant", "lr", "seed"], keep=False)]
    if len(dupes):
        raise StageError(f"select_lr: duplicate runs for (variant, lr, seed) {sorted(set(zip(dupes.variant, dupes.lr, dupes.seed)))}")

    lower_is_better = LR_METRICS[metric]
    rows = []
    for variant, runs in table.groupby("variant", sort=False):
        by_lr = runs.groupby("lr", sort=True)  # ascending lr: the first of equal means is the smaller lr
        means = by_lr[metric].agg(lambda values: values.mean(skipna=False))
        n_seeds = by_lr["seed"].count()
        finite = means.dropna()
        if finite.empty:
            lr = means.index[0]
            log.warning("%s: every learning rate has a NaN mean %s; taking the smallest, %g", variant, metric, lr)
        else:
            best = finite.min() if lower_is_better else finite.max()
            lr = finite.index[finite == best][0]
        edge = "" if len(means) < 2 else "lower" if lr == means.index[0] else "upper" if lr == means.index[-1] else ""
        rows.append([variant, float(lr), metric, float(means[lr]), len(means), int(n_seeds[lr]), edge])
    return pd.DataFrame(rows, columns=SELECT_LR_COLUMNS)


def _check_labels(labels: np.ndarray) -> np.ndarray:
    if not np.isin(labels, (0, 1)).all():
        raise StageError(f"labels must be 0 or 1, not {sorted(set(np.unique(labels).tolist()) - {0, 1})[:5]}")
    return labels == 1


def _counts(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each of `n` items occurs in each row of `indices` (..., m): shape (..., n)."""
    rows = indices.reshape(-1, indices.shape[-1])
    offsets = n * np.arange(len(rows))[:, None]
    return np.bincount((rows + offsets).ravel(), minlength=len(rows) * n).reshape(indices.shape[:-1] + (n,))


class _ResampledAUC:
    """AUCs of several models on resamples of fixed positive and negative windows, without sorting per resample.

    A resample is the multiplicities of the positives and of the negatives.
    The negatives below (or tied with) each positive are then a cumulative sum
    of the negatives' multiplicities in each model's score order, read at that
    positive's place among them, which is found once (searchsorted) for all
    resamples. This is the Mann-Whitney count (ties one half), equal to
    :func:`sklearn.metrics.roc_auc_score` on the resampled scores (a test checks), in O(windows) per
    resample rather than a sort: about ten times faster.
    """

    def __init__(self, positive_scores: np.ndarray, negative_scores: np.ndarray):
        # positive_scores (models, n_pos), negative_scores (models, n_neg)
        self.n_pos, self.n_neg = positive_scores.shape[1], negative_scores.shape[1]
        self.order = np.argsort(negative_scores, axis=1, kind="stable")
        ordered = np.take_along_axis(negative_scores, self.order, axis=1)
        self.below = np.stack([np.searchsorted(neg, pos, side="left") for neg, pos in zip(ordered, positive_scores)])
        self.not_above = np.stack([np.searchsorted(neg, pos, side="right") for neg, pos in zip(ordered, positive_scores)])

    def __call__(self, positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
        """AUC of every model on each resample: indices (..., m_pos) and (..., m_neg) -> (..., models)."""
        m_pos, m_neg = positives.shape[-1], negatives.shape[-1]
        pos_counts, neg_counts = _counts(positives, self.n_pos), _counts(negatives, self.n_neg)
        cumulative = np.cumsum(neg_counts[..., self.order], axis=-1)  # (..., models, n_neg)
        cumulative = np.concatenate([np.zeros(cumulative.shape[:-1] + (1,), cumulative.dtype), cumulative], axis=-1)
        shape = cumulative.shape[:-1] + (self.n_pos,)
        # per positive: 2 x (negatives below it) + (negatives tied with it)
        twice = np.take_along_axis(cumulative, np.broadcast_to(self.below, shape), axis=-1)
        twice += np.take_along_axis(cumulative, np.broadcast_to(self.not_above, shape), axis=-1)
        return (pos_counts[..., None, :] * twice).sum(axis=-1) / (2.0 * m_pos * m_neg)


def _as_runs(labels, scores_by_seed: list, name: str) -> np.ndarray:
    runs = [np.asarray(s, dtype=float) for s in scores_by_seed]
    for i, s in enumerate(runs):
        if s.shape != labels.shape:
            raise StageError(f"{name}[{i}] has shape {s.shape}, the labels {labels.shape}")
        if np.isnan(s).any():
            raise StageError(f"{name}[{i}] has {int(np.isnan(s).sum())} NaN scores")
    return np.stack(runs)


def _bootstrap_delta(labels, scores_a: list, scores_b: list, n_resamples: int, seed: int, confidence: float) -> dict:
    """Per-seed AUC differences on all windows, a stratified paired bootstrap of their mean over seeds, and with several
    seeds that interval widened by their spread (:func:`_with_seed_spread`)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise StageError(f"labels must be one-dimensional, not of shape {labels.shape}")
    if len(scores_a) != len(scores_b) or not scores_a:
        raise StageError(f"need the same, non-zero number of runs of both models, not {len(scores_a)} and {len(scores_b)}")
    positive = _check_labels(labels)
    a, b = _as_runs(labels, scores_a, "scores_a"), _as_runs(labels, scores_b, "scores_b")
    pos_idx, neg_idx = np.flatnonzero(positive), np.flatnonzero(~positive)
    if len(pos_idx) < 2 or len(neg_idx) < 2:
        raise StageError(f"a bootstrap of AUCs needs two or more windows of each label, not {len(pos_idx)} positive and {len(neg_idx)} negative")
    if not 0 < confidence < 1:
        raise StageError(f"confidence {confidence} is not between 0 and 1")
    if int(n_resamples) != n_resamples or n_resamples < 2:
        raise StageError(f"n_resamples must be an integer of 2 or more, not {n_resamples}")
    n_seeds = len(a)
    models = np.concatenate([a, b])  # model a's seeds, then model b's
    resampled_auc = _ResampledAUC(models[:, pos_idx], models[:, neg_idx])

    def mean_delta(positives, negatives, axis=-1):
        # positives, negatives: which positive and which negative windows, (..., n_pos) and (..., n_neg); the same for both models
        assert axis == -1
        per_run = resampled_auc(positives, negatives)  # (..., 2 * seeds): model a's seeds, then model b's
        return (per_run[..., :n_seeds] - per_run[..., n_seeds:]).mean(axis=-1)

    per_seed = np.array([roc_auc_score(positive, x) - roc_auc_score(positive, y) for x, y in zip(a, b)])
    delta = float(per_seed.mean())
    seed_sd = float(per_seed.std(ddof=1)) if n_seeds > 1 else float("nan")

    # Two samples with paired=False: scipy resamples the positives and the negatives
    # independently, each to its own size. That is the stratification.
    common = dict(
        statistic=mean_delta, vectorized=True, paired=False, axis=-1, confidence_level=confidence,
        # batches bound memory; their size depends on the windows only, so the resamples do not depend on the seeds
        batch=max(1, _BATCH_ELEMENTS // len(labels)),
    )
    data = (np.arange(len(pos_idx)), np.arange(len(neg_idx)))
    result = stats.bootstrap(data, n_resamples=n_resamples, method="percentile", **common, **{_RNG_KEYWORD: np.random.default_rng(seed)})
    distribution = result.bootstrap_distribution
    if np.ptp(distribution) == 0:
        # Every resample gives the same difference (identical or rank-equivalent
        # models, or both perfect): the interval is that point. BCa is undefined
        # here (0/0 acceleration), so it is not asked.
        low = high = float(distribution[0])
    else:
        # BCa rather than the percentile interval: AUCs are bounded by 1, and
        # the difference of two near-perfect ones is skewed and biased in the
        # resamples; BCa corrects both (second-order accurate), the percentile
        # interval neither. Its price is a jackknife, one statistic per window;
        # measured with 2000 resamples it adds 10% at 512 windows, 60% at 1000
        # and 130% at 4000 (about half a second): affordable for test splits
        # of a few thousand windows. It reuses the percentile run's resamples.
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            bca = stats.bootstrap(data, n_resamples=0, bootstrap_result=result, method="BCa", **common)
        low, high = float(bca.confidence_interval.low), float(bca.confidence_interval.high)
        if not (np.isfinite(low) and np.isfinite(high)):
            log.warning("the BCa interval of an AUC difference is undefined (degenerate jackknife); using the percentile interval")
            low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    se = float(result.standard_error)
    if n_seeds > 1:
        low, high, se = _with_seed_spread(delta, low, high, se, seed_sd, n_seeds, confidence)
    return {"delta": delta, "ci_low": low, "ci_high": high, "se": se, "seed_sd": seed_sd, "n_seeds": n_seeds, "n_resamples": int(n_resamples)}


def _with_seed_spread(delta: float, low: float, high: float, se: float, seed_sd: float, n_seeds: int, confidence: float):
    """The windows' interval of a mean over seeds widened by the seeds' own spread: (low, high, se).

    The bootstrap over the shared test windows holds their sampling, not the spread of retraining (another seed, or
    any change that makes a run take another path: early stopping then ends it elsewhere). That spread is the per-seed
    differences' standard error, seed_sd / sqrt(n), taken at Student's t with n - 1 degrees of freedom, since with a
    few seeds the spread is itself poorly known (t at 2 degrees of freedom is 4.30, not 1.96). Each side of the
    windows' interval is added to it in quadrature. Resampling the seeds with the windows instead (a two-level
    bootstrap) covered a true zero only 78% of the time at 3 seeds, where this covers it 94-96% at 2-5 seeds
    (``benchmarks/interval_coverage.py``).
    """
    half = stats.t.ppf((1 + confidence) / 2, n_seeds - 1) * seed_sd / np.sqrt(n_seeds)
    return delta - float(np.hypot(delta - low, half)), delta + float(np.hypot(high - delta, half)), float(np.hypot(se, seed_sd / np.sqrt(n_seeds)))


def paired_auc_difference(labels, scores_a, scores_b, *, n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
    """AUC of model a minus model b on the same windows, with a paired, label-stratified bootstrap interval.

    Returns delta (on all windows), ci_low, ci_high (BCa, at `confidence`),
    se (the bootstrap standard error) and n_resamples. The resamples are fixed
    by `seed`.
    """
    out = _bootstrap_delta(labels, [scores_a], [scores_b], n_resamples, seed, confidence)
    return {key: out[key] for key in ("delta", "ci_low", "ci_high", "se", "n_resamples")}


def pooled_auc_difference(
    labels, scores_a_by_seed: list, scores_b_by_seed: list, *, n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> dict:
    """Mean over seeds of the per-seed AUC differences (seeds pair up by position), with one bootstrap interval.

    Each resample draws one set of windows (stratified by label) and averages
    the per-seed differences on those same windows; with several seeds the
    interval is then widened by the seeds' spread (Student's t), so that it
    holds the spread of retraining as well as the test split's sampling, and a
    verdict speaks of the methods, not of these runs. Returns delta, ci_low,
    ci_high, se (both parts), seed_sd (standard deviation over seeds of the
    per-seed differences, NaN with one seed), n_seeds and n_resamples.
    """
    return _bootstrap_delta(labels, list(scores_a_by_seed), list(scores_b_by_seed), n_resamples, seed, confidence)


def auc_interval(labels, scores_by_seed: list, *, n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Mean AUC over seeds with the same label-stratified bootstrap interval, as the paired difference to chance.

    A constant score has AUC 0.5 on any resample, so the pooled difference of
    the runs against it, plus 0.5, is their AUC with its interval: "at chance"
    is then read off an interval that covers 0.5, like every other verdict.
    """
    constant = [np.zeros(len(np.asarray(s))) for s in scores_by_seed]
    d = pooled_auc_difference(labels, scores_by_seed, constant, n_resamples=n_resamples, seed=seed, confidence=confidence)
    return {"auc": 0.5 + d["delta"], "ci_low": 0.5 + d["ci_low"], "ci_high": 0.5 + d["ci_high"], "above_chance": bool(d["ci_low"] > 0)}


def verdict(ci_low: float, ci_high: float) -> str:
    """"higher" when the interval lies above 0, "lower" when below, else "indistinguishable"."""
    if ci_low > 0:
        return "higher"
    if ci_high < 0:
        return "lower"
    return "indistinguishable"


def check_predictions(predictions: dict) -> tuple[np.ndarray, dict]:
    """The shared labels (in window order) and each run's logits in that order; StageError naming a run that differs."""
    if not predictions:
        raise StageError("no predictions to compare")
    reference, windows, labels, snr, logits = None, None, None, None, {}
    for key, frame in predictions.items():
        variant, seed = key
        missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
        if missing:
            raise StageError(f"predictions of {variant} seed {seed} lack the columns {missing}")
        frame = frame.sort_values("window", kind="stable")
        w, y = frame["window"].to_numpy(), frame["label"].to_numpy()
        if len(np.unique(w)) != len(w):
            raise StageError(f"predictions of {variant} seed {seed} repeat windows")
        if reference is None:
            reference, windows, labels = key, w, y
            snr = frame["snr"].to_numpy(dtype=float) if "snr" in frame.columns else None
        elif len(w) != len(windows) or not np.array_equal(w, windows):
            raise StageError(
                f"predictions of {variant} seed {seed} score other test windows than {reference[0]} seed {reference[1]} "
                f"({len(w)} windows against {len(windows)}): every run must score the same test split"
            )
        elif not np.array_equal(y, labels):
            raise StageError(
                f"predictions of {variant} seed {seed} label {int((y != labels).sum())} windows differently "
                f"from {reference[0]} seed {reference[1]}: every run must score the same test split"
            )
        elif snr is not None and "snr" in frame.columns and not np.allclose(frame["snr"].to_numpy(dtype=float), snr, rtol=1e-4, equal_nan=True):
            raise StageError(
                f"predictions of {variant} seed {seed} give other injected SNRs than {reference[0]} seed {reference[1]}: "
                "every run must score the same test split"
            )
        logits[key] = frame["logit"].to_numpy(dtype=float)
        if np.isnan(logits[key]).any():
            raise StageError(f"predictions of {variant} seed {seed} have {int(np.isnan(logits[key]).sum())} NaN logits")
    return labels, logits


def pooled_differences(diffs: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """The pooled-over-seeds rows of a :func:`differences_table` against `baseline`, indexed by variant."""
    return diffs[(diffs.baseline == baseline) & (diffs.seed.astype(str) == "pooled")].set_index("variant")


def differences_table(
    predictions: dict[tuple[str, int], pd.DataFrame],
    pairs: list[tuple[str, str]],
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Test-AUC differences of each (variant, baseline) pair: one row per shared seed, then one pooled row.

    `predictions` maps (variant, seed) to that run's predictions (window,
    label, logit); every run must score the same windows with the same labels.
    Seeds pair up by their number. Columns: :data:`DIFFERENCE_COLUMNS`; the
    pooled row has seed "pooled" (the column is of object dtype), the per-seed
    rows seed_sd NaN and n_seeds 1. Pairs of a variant with itself are skipped.
    Every bootstrap uses the resamples fixed by `seed`.
    """
    labels, logits = check_predictions(predictions)
    seeds_of: dict[str, list] = {}
    for variant, run_seed in logits:
        seeds_of.setdefault(variant, []).append(run_seed)
    rows = []
    for variant, baseline in pairs:
        if variant == baseline:
            continue
        for name in (variant, baseline):
            if name not in seeds_of:
                raise StageError(f"comparison {variant} vs {baseline}: no predictions of variant {name!r} (have {sorted(seeds_of)})")
        shared = sorted(set(seeds_of[variant]) & set(seeds_of[baseline]))
        if not shared:
            raise StageError(
                f"comparison {variant} vs {baseline}: no seed in common (seeds {sorted(seeds_of[variant])} and {sorted(seeds_of[baseline])})"
            )
        options = dict(n_resamples=n_resamples, seed=seed, confidence=confidence)
        for run_seed in shared:
            d = paired_auc_difference(labels, logits[variant, run_seed], logits[baseline, run_seed], **options)
            rows.append([variant, baseline, run_seed, d["delta"], d["ci_low"], d["ci_high"], np.nan, 1, d["n_resamples"], verdict(d["ci_low"], d["ci_high"])])
        d = pooled_auc_difference(labels, [logits[variant, s] for s in shared], [logits[baseline, s] for s in shared], **options)
        rows.append([variant, baseline, "pooled", d["delta"], d["ci_low"], d["ci_high"], d["seed_sd"], d["n_seeds"], d["n_resamples"], verdict(d["ci_low"], d["ci_high"])])
    table = pd.DataFrame(rows, columns=DIFFERENCE_COLUMNS)
    table["seed"] = table["seed"].astype(object)
    return table
