"""Detection efficiency intervals are exact binomial intervals of each seed's count, spread over seeds, never of a mean count."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gwlora.aggregate import EFFICIENCY_COLUMNS, _binomial_interval, efficiency
from gwlora.cli import StageError


def run_predictions(detected: int, n_noise: int = 200) -> pd.DataFrame:
    """One run's test predictions: noise logits below 0; 50 signals in 5 equal-count SNR bins of 10, the first
    `detected` of each bin far above the noise, the others far below."""
    snr = np.linspace(8.0, 20.0, 50)
    logits = np.r_[np.linspace(-3, -1, n_noise), np.where(np.arange(50) % 10 < detected, 5.0, -5.0)]
    labels = np.r_[np.zeros(n_noise), np.ones(50)].astype(int)
    return pd.DataFrame({"window": range(len(labels)), "label": labels, "logit": logits, "snr": np.r_[np.zeros(n_noise), snr]})


def test_seeds_that_disagree_widen_the_interval_that_a_mean_count_would_have_narrowed():
    # seed 0 detects all 10 signals, seed 1 none: a mean of 5 of 10 would read 0.19..0.81 (Clopper-Pearson of 5/10)
    table = efficiency({"test": {("lora-r8", 0): run_predictions(10), ("lora-r8", 1): run_predictions(0)}}, fpr=0.01)
    assert list(table.columns) == EFFICIENCY_COLUMNS
    assert len(table) == 5
    row = table.iloc[2]
    assert (row.n_signal, row.seeds, row.efficiency) == (10, 2, 0.5)
    assert (row.seed_min, row.seed_max) == (0.0, 1.0)
    assert row.ci_low == 0.0 and row.ci_high == 1.0  # the envelope of CP(0 of 10) and CP(10 of 10)
    mean_count = stats.binomtest(5, 10).proportion_ci(method="exact")
    assert row.ci_low < mean_count.low and row.ci_high > mean_count.high


def test_one_seed_reports_the_exact_interval_of_its_count():
    row = efficiency({"test": {("full", 0): run_predictions(7)}}, fpr=0.01).iloc[0]
    exact = stats.binomtest(7, 10).proportion_ci(confidence_level=0.95, method="exact")
    assert row.efficiency == pytest.approx(0.7)
    assert (row.ci_low, row.ci_high) == pytest.approx((exact.low, exact.high))
    assert row.seed_min == row.seed_max == pytest.approx(0.7)


def test_a_mean_count_is_refused():
    with pytest.raises(StageError, match="whole count"):
        _binomial_interval(2.5, 10)
