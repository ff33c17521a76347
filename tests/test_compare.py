"""Learning rates chosen on validation only, and the paired bootstrap of test-AUC differences."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from gwlora import compare
from gwlora.cli import StageError
from gwlora.findings import describe
from gwlora.compare import (
    DIFFERENCE_COLUMNS,
    SELECT_LR_COLUMNS,
    VALIDATION_COLUMNS,
    differences_table,
    paired_auc_difference,
    pooled_auc_difference,
    select_lr,
    verdict,
)


def tied_scores(rng, shape, decimals=1):
    """Gaussian scores rounded so that many tie."""
    return np.round(rng.normal(size=shape), decimals)


def labelled(n, rng, separation=1.0):
    """Balanced labels and a score that separates them by `separation` standard deviations."""
    labels = np.arange(n) % 2
    return labels, separation * labels + rng.normal(size=n)


# --- the bootstrap's AUC ---------------------------------------------------------------------


def test_resampled_auc_equals_sklearn_on_the_resampled_windows():
    """The bootstrap's counting AUC is sklearn's AUC of the resampled scores, ties included."""
    rng = np.random.default_rng(2)
    positives, negatives = tied_scores(rng, (3, 30)) + 0.5, tied_scores(rng, (3, 20))
    counting = compare._ResampledAUC(positives, negatives)
    for m_pos, m_neg in ((30, 20), (29, 20), (30, 19)):  # bootstrap resamples and jackknife ones
        pos = rng.integers(0, 30, (7, m_pos))
        neg = rng.integers(0, 20, (7, m_neg))
        got = counting(pos, neg)
        assert got.shape == (7, 3)
        labels = np.r_[np.ones(m_pos, int), np.zeros(m_neg, int)]
        for k in range(3):
            scores = np.concatenate([positives[k][pos], negatives[k][neg]], axis=-1)
            np.testing.assert_allclose(got[:, k], [roc_auc_score(labels, row) for row in scores], rtol=0, atol=1e-12)


# --- select_lr -----------------------------------------------------------------


def validation_table(rows):
    return pd.DataFrame(rows, columns=list(VALIDATION_COLUMNS))


def runs_table():
    """Two variants, three lrs each, three seeds; the validation and the test optima differ on purpose."""
    rows = []
    # full: lr 1e-4 has the best mean val loss (0.30) though seed 2 does best at 1e-3; 3e-4 is best on test
    val_loss = {1e-4: [0.30, 0.28, 0.32], 3e-4: [0.35, 0.36, 0.34], 1e-3: [0.40, 0.45, 0.20]}
    val_auc = {1e-4: [0.90, 0.91, 0.92], 3e-4: [0.95, 0.95, 0.95], 1e-3: [0.80, 0.80, 0.99]}
    for lr in val_loss:
        for seed in range(3):
            rows.append(["full", lr, seed, val_loss[lr][seed], val_auc[lr][seed], 0.99 if lr == 3e-4 else 0.7])
    # lora-r8: lr 1e-3 best on mean val loss and val auc; 1e-4 best on test
    for lr, loss, auc_ in ((1e-4, 0.50, 0.70), (3e-4, 0.45, 0.75), (1e-3, 0.40, 0.80)):
        for seed in range(3):
            rows.append(["lora-r8", lr, seed, loss + 0.01 * seed, auc_ - 0.01 * seed, 0.99 if lr == 1e-4 else 0.6])
    return pd.DataFrame(rows, columns=[*VALIDATION_COLUMNS, "test_auc"])


def test_select_lr_picks_the_best_mean_validation_metric():
    validation = runs_table()[list(VALIDATION_COLUMNS)]
    by_loss = select_lr(validation, "val_loss")
    assert list(by_loss.columns) == SELECT_LR_COLUMNS
    assert list(by_loss.variant) == ["full", "lora-r8"]  # order of first appearance
    assert list(by_loss.lr) == [1e-4, 1e-3]
    assert by_loss.value.tolist() == pytest.approx([0.30, 0.41])
    assert (by_loss.metric == "val_loss").all()
    assert by_loss.n_lrs.tolist() == [3, 3] and by_loss.n_seeds.tolist() == [3, 3]
    by_auc = select_lr(validation, metric="val_auc")
    assert list(by_auc.lr) == [3e-4, 1e-3]
    assert by_auc.value.tolist() == pytest.approx([0.95, 0.79])


def test_a_selected_lr_at_the_edge_of_its_grid_is_flagged_and_an_interior_one_is_not():
    validation = runs_table()[list(VALIDATION_COLUMNS)]
    by_loss = select_lr(validation, "val_loss")  # full at 1e-4, the smallest; lora-r8 at 1e-3, the largest
    assert by_loss.grid_edge.tolist() == ["lower", "upper"]
    assert select_lr(validation, "val_auc").grid_edge.tolist() == ["", "upper"]  # full at 3e-4: inside its grid
    single = validation[validation.lr == 1e-4]
    assert select_lr(single, "val_loss").grid_edge.tolist() == ["", ""]  # one lr: no grid, no edge


def test_the_deck_and_the_tables_say_when_a_selected_lr_is_at_a_grid_edge():
    from gwlora.aggregate import display_table
    from gwlora.findings import edge_words

    assert edge_words("lower") == ", at the lower edge" and edge_words("") == edge_words(None) == ""
    summary = pd.DataFrame({"variant": ["full", "lora-r8"], "seeds": [3, 3], "did_not_learn": [0, 0], "still_improving": [0, 0],
                            "lr": [1e-4, 3e-4], "lrs_tried": [3, 3], "lr_grid_edge": ["lower", ""]})
    shown = display_table(summary, metrics=(), parameters=False)
    assert shown.lr.tolist() == ["0.0001 (best of 3; lower edge)", "0.0003 (best of 3)"]


def test_select_lr_ties_go_to_the_smaller_lr():
    rows = [["full", lr, seed, loss, 0.9] for lr, loss in ((1e-3, 0.3), (1e-4, 0.3), (3e-4, 0.4)) for seed in (0, 1)]
    assert select_lr(validation_table(rows), "val_loss").lr.tolist() == [1e-4]
    # equal means from different seeds' values
    rows = [["full", 1e-3, 0, 0.2, 0.9], ["full", 1e-3, 1, 0.4, 0.9], ["full", 1e-4, 0, 0.3, 0.9], ["full", 1e-4, 1, 0.3, 0.9]]
    assert select_lr(validation_table(rows), "val_loss").lr.tolist() == [1e-4]


def test_select_lr_nan_never_wins_unless_all_are_nan(caplog):
    rows = [["full", 1e-4, s, 0.3, np.nan] for s in (0, 1)] + [["full", 1e-3, s, 0.5, 0.6] for s in (0, 1)]
    rows += [["frozen", lr, s, 0.4, np.nan] for lr in (1e-3, 1e-4) for s in (0, 1)]
    with caplog.at_level(logging.WARNING, logger="gwlora.compare"):
        chosen = select_lr(validation_table(rows), metric="val_auc").set_index("variant")
    assert chosen.loc["full", "lr"] == 1e-3 and chosen.loc["full", "value"] == 0.6
    assert chosen.loc["frozen", "lr"] == 1e-4 and np.isnan(chosen.loc["frozen", "value"])
    assert "frozen" in caplog.text and "NaN" in caplog.text
    # one NaN seed makes its lr's mean NaN: it cannot win on its other seeds
    rows = [["full", 1e-4, 0, 0.1, 0.9], ["full", 1e-4, 1, np.nan, 0.9], ["full", 1e-3, 0, 0.5, 0.9], ["full", 1e-3, 1, 0.5, 0.9]]
    assert select_lr(validation_table(rows), "val_loss").lr.tolist() == [1e-3]


def test_select_lr_refuses_test_columns_and_bad_input():
    runs = runs_table()
    with pytest.raises(StageError, match="validation metrics only.*test_auc"):
        select_lr(runs, "val_loss")
    with pytest.raises(StageError, match="lacks the columns \\['val_auc'\\]"):
        select_lr(runs[["variant", "lr", "seed", "val_loss"]], "val_loss")
    with pytest.raises(StageError, match="metric 'test_auc'"):
        select_lr(runs[list(VALIDATION_COLUMNS)], metric="test_auc")
    with pytest.raises(StageError, match="duplicate runs"):
        select_lr(pd.concat([runs[list(VALIDATION_COLUMNS)]] * 2), "val_loss")
    with pytest.raises(StageError, match="no runs"):
        select_lr(runs[list(VALIDATION_COLUMNS)].iloc[:0], "val_loss")


def test_test_metrics_cannot_change_the_selection():
    """Permuting or replacing the test numbers leaves the choice alone: select_lr never sees them."""
    runs = runs_table()
    # the test optimum differs from the validation one, so a leak would show
    test_best = runs.loc[runs.groupby("variant", sort=False)["test_auc"].idxmax(), "lr"].tolist()
    expected = {metric: select_lr(runs[list(VALIDATION_COLUMNS)], metric) for metric in compare.LR_METRICS}
    assert expected["val_loss"].lr.tolist() != test_best
    rng = np.random.default_rng(3)
    variations = [runs.assign(test_auc=rng.permutation(runs.test_auc.to_numpy())) for _ in range(5)]
    variations += [runs.assign(test_auc=rng.uniform(0, 1, len(runs))), runs.assign(test_auc=np.nan)]
    # and a leak through row order: the same runs in another order choose the same
    variations.append(runs.sample(frac=1, random_state=4).sort_values("variant", kind="stable"))
    for changed in variations:
        for metric, chosen in expected.items():
            pd.testing.assert_frame_equal(select_lr(changed[list(VALIDATION_COLUMNS)], metric), chosen)
        with pytest.raises(StageError, match="test_auc"):
            select_lr(changed, "val_loss")


# --- paired bootstrap ----------------------------------------------------------


def test_identical_models_differ_by_exactly_zero_without_warnings():
    rng = np.random.default_rng(5)
    labels, a = labelled(200, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = paired_auc_difference(labels, a, a.copy(), n_resamples=300)
        # a monotone transform ranks the same windows the same way: paired, every resample gives 0
        monotone = paired_auc_difference(labels, a, np.exp(a) + 3, n_resamples=300)
        # both perfect with different scores: every resample gives 1 - 1
        perfect = paired_auc_difference(labels, labels + 0.01 * a, 2.0 * labels + 0.1 * a, n_resamples=300)
    for out in (same, monotone, perfect):
        assert (out["delta"], out["ci_low"], out["ci_high"]) == (0.0, 0.0, 0.0)
        assert out["se"] == 0.0 and out["n_resamples"] == 300
    assert verdict(same["ci_low"], same["ci_high"]) == "indistinguishable"


def test_a_model_that_separates_better_is_clearly_higher():
    rng = np.random.default_rng(6)
    labels, a = labelled(300, rng, separation=0.5)
    assert 0.55 < roc_auc_score(labels, a) < 0.8  # imperfect
    b = a + 3.0 * labels  # a large constant added to the positives' scores only
    b_minus_a = paired_auc_difference(labels, b, a, n_resamples=500)
    a_minus_b = paired_auc_difference(labels, a, b, n_resamples=500)
    assert b_minus_a["delta"] == pytest.approx(roc_auc_score(labels, b) - roc_auc_score(labels, a))
    assert a_minus_b["delta"] == pytest.approx(-b_minus_a["delta"])
    assert b_minus_a["ci_low"] < b_minus_a["delta"] < b_minus_a["ci_high"]
    assert verdict(b_minus_a["ci_low"], b_minus_a["ci_high"]) == "higher"
    assert verdict(a_minus_b["ci_low"], a_minus_b["ci_high"]) == "lower"
    assert describe(b_minus_a["delta"], b_minus_a["ci_low"], b_minus_a["ci_high"]).startswith("higher (+0.")
    assert describe(a_minus_b["delta"], a_minus_b["ci_low"], a_minus_b["ci_high"]).startswith("lower (-0.")


def delong_se(labels, a, b):
    """DeLong et al. (1988): standard error of AUC(a) - AUC(b) on the same windows."""
    positive = labels == 1

    def components(scores):
        x, y = scores[positive], scores[~positive]
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        return psi.mean(axis=1), psi.mean(axis=0)  # V10 (one per positive), V01 (one per negative)

    (v10_a, v01_a), (v10_b, v01_b) = components(a), components(b)
    s10, s01 = np.cov(np.stack([v10_a, v10_b])), np.cov(np.stack([v01_a, v01_b]))
    contrast = np.array([1.0, -1.0])
    variance = contrast @ s10 @ contrast / positive.sum() + contrast @ s01 @ contrast / (~positive).sum()
    return float(np.sqrt(variance))


def test_bootstrap_standard_error_matches_delong():
    """The case with a known answer: two correlated gaussian-score models on 2,000 windows."""
    rng = np.random.default_rng(7)
    n = 2000
    labels = np.arange(n) % 2
    shared = rng.normal(size=n)  # what both models get wrong alike
    a = 1.0 * labels + 0.8 * shared + 0.6 * rng.normal(size=n)
    b = 0.8 * labels + 0.8 * shared + 0.6 * rng.normal(size=n)
    out = paired_auc_difference(labels, a, b, n_resamples=2000, seed=1)
    expected = delong_se(labels, a, b)
    assert out["delta"] == pytest.approx(roc_auc_score(labels, a) - roc_auc_score(labels, b))
    assert out["se"] == pytest.approx(expected, rel=0.2)
    # and the interval is about ±1.96 standard errors wide
    assert out["ci_high"] - out["ci_low"] == pytest.approx(2 * 1.96 * expected, rel=0.2)
    # the same seed gives the same resamples; another seed other ones
    assert paired_auc_difference(labels, a, b, n_resamples=200, seed=1) == paired_auc_difference(labels, a, b, n_resamples=200, seed=1)
    assert paired_auc_difference(labels, a, b, n_resamples=200, seed=2)["ci_low"] != paired_auc_difference(labels, a, b, n_resamples=200, seed=1)["ci_low"]


def test_every_resample_keeps_the_label_counts(monkeypatch):
    """Positives and negatives go to scipy as two unpaired samples: each is resampled to its own count."""
    rng = np.random.default_rng(8)
    labels = (rng.uniform(size=90) < 0.3).astype(int)  # unbalanced, in no particular order
    n_pos, n_neg = int(labels.sum()), int((labels == 0).sum())
    scores = labels + rng.normal(size=90)
    seen = []
    real_bootstrap = stats.bootstrap

    def spy(data, statistic, **kwargs):
        assert kwargs["paired"] is False
        assert [len(sample) for sample in data] == [n_pos, n_neg]

        def recording(positives, negatives, axis=-1):
            seen.append((kwargs["method"], positives.shape, negatives.shape, positives.max(), negatives.max()))
            return statistic(positives, negatives, axis=axis)

        return real_bootstrap(data, recording, **kwargs)

    monkeypatch.setattr(compare.stats, "bootstrap", spy)
    paired_auc_difference(labels, scores, 0.5 * scores + rng.normal(size=90), n_resamples=250)
    resamples = [shapes for shapes in seen if shapes[0] == "percentile"]
    assert sum(p[0] for _, p, _, _, _ in resamples) == 250  # every resample drawn, in batches
    for _, pos_shape, neg_shape, pos_max, neg_max in resamples:
        assert pos_shape[-1] == n_pos and neg_shape[-1] == n_neg  # the label counts, in every resample
        assert pos_shape[:-1] == neg_shape[:-1]
        assert pos_max < n_pos and neg_max < n_neg  # drawn from their own label's windows
    assert any(method == "BCa" for method, *_ in seen)  # the jackknife of the BCa interval


def test_paired_difference_refuses_what_it_cannot_compare():
    labels = np.array([0, 1, 0, 1, 0, 1])
    scores = np.arange(6.0)
    with pytest.raises(StageError, match="two or more windows of each label"):
        paired_auc_difference(np.array([0, 1, 0, 0, 0, 0]), scores, scores)
    with pytest.raises(StageError, match="shape"):
        paired_auc_difference(labels, scores, scores[:5])
    with pytest.raises(StageError, match="NaN"):
        paired_auc_difference(labels, scores, np.r_[scores[:5], np.nan])
    with pytest.raises(StageError, match="0 or 1"):
        paired_auc_difference(labels * 2, scores, scores)


# --- pooled over seeds ---------------------------------------------------------


def test_pooled_difference_of_equal_seeds():
    rng = np.random.default_rng(9)
    labels, a = labelled(240, rng, separation=1.2)
    b = 0.6 * labels + rng.normal(size=240)
    single = paired_auc_difference(labels, a, b, n_resamples=400, seed=3)
    # a second seed whose scores rank every window alike: the same per-seed difference d
    pooled = pooled_auc_difference(labels, [a, 2 * a - 1], [b, np.exp(b)], n_resamples=400, seed=3)
    assert pooled["delta"] == pytest.approx(single["delta"])
    assert pooled["seed_sd"] == 0.0 and pooled["n_seeds"] == 2 and pooled["n_resamples"] == 400
    # each resample averages d and d over the same windows: the single seed's interval
    assert (pooled["ci_low"], pooled["ci_high"]) == pytest.approx((single["ci_low"], single["ci_high"]))
    one = pooled_auc_difference(labels, [a], [b], n_resamples=400, seed=3)
    assert np.isnan(one["seed_sd"]) and one["n_seeds"] == 1 and one["ci_low"] == pytest.approx(single["ci_low"])
    with pytest.raises(StageError, match="same, non-zero number of runs"):
        pooled_auc_difference(labels, [a, a], [b], n_resamples=10)


def test_pooled_difference_averages_the_seeds():
    rng = np.random.default_rng(10)
    labels = np.arange(300) % 2
    a = [labels * s + rng.normal(size=300) for s in (1.0, 1.5, 0.5)]
    b = [labels * 0.8 + rng.normal(size=300) for _ in range(3)]
    per_seed = [roc_auc_score(labels, x) - roc_auc_score(labels, y) for x, y in zip(a, b)]
    pooled = pooled_auc_difference(labels, a, b, n_resamples=300)
    assert pooled["delta"] == pytest.approx(np.mean(per_seed))
    assert pooled["seed_sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert pooled["ci_low"] < pooled["delta"] < pooled["ci_high"]


def test_a_difference_made_by_one_retraining_is_not_called_a_difference():
    """With several seeds the interval holds the runs' spread, not only the windows': seeds that disagree in sign
    (retrained runs that ended differently) give an interval at least Student's t of their standard error wide."""
    rng = np.random.default_rng(12)
    labels = np.arange(4000) % 2
    b = [labels + rng.normal(size=4000) for _ in range(3)]
    # each seed of model a is its seed of b made better or worse by a fixed amount: per-seed differences +, +, -
    a = [y + shift * labels for y, shift in zip(b, (0.12, 0.16, -0.15))]
    per_seed = [roc_auc_score(labels, x) - roc_auc_score(labels, y) for x, y in zip(a, b)]
    pooled = pooled_auc_difference(labels, a, b, n_resamples=1000)
    # over the windows alone, one seed's interval is a few thousandths wide
    window_only = paired_auc_difference(labels, a[0], b[0], n_resamples=1000)
    assert window_only["ci_high"] - window_only["ci_low"] < 0.005
    assert pooled["ci_low"] < 0 < pooled["ci_high"]
    seeds_half_width = stats.t.ppf(0.975, 2) * np.std(per_seed, ddof=1) / np.sqrt(3)
    assert pooled["delta"] - pooled["ci_low"] >= seeds_half_width and pooled["ci_high"] - pooled["delta"] >= seeds_half_width
    assert pooled["se"] >= np.std(per_seed, ddof=1) / np.sqrt(3)


# --- differences_table ---------------------------------------------------------


def predictions_of(labels, logits, rng=None):
    frame = pd.DataFrame({"window": np.arange(len(labels)), "label": labels, "snr": 10.0 * labels, "logit": logits})
    return frame if rng is None else frame.sample(frac=1, random_state=rng)  # row order must not matter


def study_predictions(n=160):
    rng = np.random.default_rng(11)
    labels = np.arange(n) % 2
    strength = {"full": 1.0, "frozen": 0.1, "lora-r8": 1.1}
    seeds = {"full": (0, 1, 2), "frozen": (0, 1, 2), "lora-r8": (1, 2)}
    return labels, {
        (variant, seed): predictions_of(labels, strength[variant] * labels + rng.normal(size=n), rng=seed)
        for variant in strength for seed in seeds[variant]
    }


def test_differences_table_rows():
    labels, predictions = study_predictions()
    table = differences_table(predictions, [("lora-r8", "full"), ("full", "full"), ("frozen", "full")], n_resamples=200)
    assert list(table.columns) == DIFFERENCE_COLUMNS
    assert table.seed.dtype == object
    assert list(zip(table.variant, table.baseline, table.seed)) == [
        ("lora-r8", "full", 1), ("lora-r8", "full", 2), ("lora-r8", "full", "pooled"),
        ("frozen", "full", 0), ("frozen", "full", 1), ("frozen", "full", 2), ("frozen", "full", "pooled"),
    ]
    per_seed, pooled = table[table.seed != "pooled"], table[table.seed == "pooled"]
    assert per_seed.seed_sd.isna().all() and (per_seed.n_seeds == 1).all()
    assert pooled.n_seeds.tolist() == [2, 3] and pooled.seed_sd.notna().all()
    assert (table.n_resamples == 200).all()
    for row in table.itertuples():
        assert row.ci_low <= row.delta <= row.ci_high
        assert row.verdict == verdict(row.ci_low, row.ci_high)
        if row.seed != "pooled":
            variant = predictions[row.variant, row.seed].sort_values("window")
            baseline = predictions[row.baseline, row.seed].sort_values("window")
            assert row.delta == pytest.approx(roc_auc_score(labels, variant.logit) - roc_auc_score(labels, baseline.logit))
    for variant in ("lora-r8", "frozen"):
        rows = table[(table.variant == variant) & (table.seed != "pooled")]
        assert table.loc[(table.variant == variant) & (table.seed == "pooled"), "delta"].item() == pytest.approx(rows.delta.mean())
    assert table.loc[(table.variant == "frozen") & (table.seed == "pooled"), "verdict"].item() == "lower"
    assert differences_table(predictions, [("full", "full")], n_resamples=10).empty


def test_differences_table_refuses_runs_on_other_windows():
    labels, predictions = study_predictions()
    shifted = dict(predictions)
    shifted["frozen", 1] = predictions["frozen", 1].assign(window=lambda f: f.window + 1)
    with pytest.raises(StageError, match="frozen seed 1 score other test windows"):
        differences_table(shifted, [("frozen", "full")], n_resamples=10)
    shorter = dict(predictions)
    shorter["lora-r8", 2] = predictions["lora-r8", 2].iloc[:-1]
    with pytest.raises(StageError, match="lora-r8 seed 2 score other test windows"):
        differences_table(shorter, [("lora-r8", "full")], n_resamples=10)
    relabelled = dict(predictions)
    relabelled["frozen", 0] = predictions["frozen", 0].assign(label=lambda f: 1 - f.label)
    with pytest.raises(StageError, match="frozen seed 0 label 160 windows differently"):
        differences_table(relabelled, [("frozen", "full")], n_resamples=10)
    injected = {key: frame.assign(snr=np.where(frame.label == 1, 10.0, 0.0)) for key, frame in predictions.items()}
    injected["lora-r8", 1] = injected["lora-r8", 1].assign(snr=lambda f: f.snr * 1.5)  # another split's injections
    with pytest.raises(StageError, match="lora-r8 seed 1 give other injected SNRs than full seed 0"):
        differences_table(injected, [("lora-r8", "full")], n_resamples=10)
    with pytest.raises(StageError, match="no predictions of variant 'lora-r16'"):
        differences_table(predictions, [("lora-r16", "full")], n_resamples=10)
    with pytest.raises(StageError, match="no seed in common"):
        disjoint = {key: predictions[key] for key in (("lora-r8", 1), ("lora-r8", 2), ("full", 0))}
        differences_table(disjoint, [("lora-r8", "full")], n_resamples=10)


# --- verdict and describe ------------------------------------------------------


def test_verdict_and_describe():
    assert verdict(0.004, 0.02) == "higher"
    assert verdict(-0.02, -0.004) == "lower"
    assert verdict(-0.015, 0.01) == "indistinguishable"
    assert verdict(0.0, 0.01) == "indistinguishable"  # touching zero is not above it
    assert describe(0.012, 0.004, 0.02) == "higher (+0.0120, 95% CI +0.0040 to +0.0200)"
    assert describe(-0.012, -0.02, -0.004) == "lower (-0.0120, 95% CI -0.0200 to -0.0040)"
    # an interval is printed as the interval it is, never as a symmetric ± bound it is not
    assert describe(0.001, -0.015, 0.01) == "indistinguishable (+0.0010, 95% CI -0.0150 to +0.0100)"
    assert describe(0.005, -0.0074, 0.0168) == "indistinguishable (+0.0050, 95% CI -0.0074 to +0.0168)"
    assert describe(0.0, np.nan, np.nan) == "indistinguishable (no 95% interval)"
    assert describe(0.05, 0.01, 0.09, confidence=0.9) == "higher (+0.0500, 90% CI +0.0100 to +0.0900)"
    # a side that did not converge: no verdict about the methods, the interval still shown
    assert describe(0.04, 0.01, 0.07, unconverged="full did not learn in 1 of 3 seeds") == (
        "not converged (+0.0400, 95% CI +0.0100 to +0.0700)")
