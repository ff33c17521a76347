"""The matched filter against physics: optimal SNR recovered, Gaussian-noise statistics, bank coverage."""

import copy

import numpy as np
import pytest
import yaml
from scipy import stats

from conftest import REPO
from gwlora import dataset, matched_filter as mf


@pytest.fixture(scope="module")
def data():
    with open(REPO / "config" / "demo.yaml") as fh:
        data = yaml.safe_load(fh)["data"]
    data["gps_start"] = 1_000_000_000.0
    return data


@pytest.fixture(scope="module")
def noise(data):
    """Noise-only windows exactly as the data stage makes them."""
    return np.stack([dataset.simulated_window(data, 0, "test", i, 0)["strain"] for i in range(160)])


def one_template(data, m1=30.0, m2=25.0):
    space = mf.TemplateSpace.from_data(data)
    return mf.WindowFilter(space, mf.Bank(np.array([[m1, m2]]), 0.97, 1, 0), list(data["detectors"]))


def test_a_noiseless_injection_filtered_with_its_own_template_returns_its_optimal_snr(data):
    # a heavy binary merging late in the window: the whole signal lies inside it, so the window holds its optimal SNR
    data = copy.deepcopy(data)
    data["injection"].update(masses={"min": 45.0, "max": 45.0}, f_lower=20.0, merger_position={"min": 0.9, "max": 0.9})
    layout = dataset.segment_layout(data)
    psd = dataset.simulated_psd(data)
    row = dataset.blank_row(2, data["gps_start"] + layout.start / layout.fs)
    segment, _ = dataset.inject(np.zeros((2, layout.n)), psd, data, np.random.default_rng(3), data["gps_start"], row)
    window = dataset.condition(segment, psd, layout.fs, (20.0, 1000.0), layout.start, layout.length)
    filt = one_template(data, 45.0, 45.0)
    per_detector = np.sqrt(filt.snr_squared(filt.to_filter_rate(window[None].astype(float)))[0, :, 0].max(axis=-1))
    np.testing.assert_allclose(per_detector, row["detector_snr"], rtol=0.01)
    assert filt.network_snr(window[None])[0] == pytest.approx(row["snr"], rel=0.01)


def test_noise_at_any_one_merger_time_is_chi_squared_with_two_degrees_of_freedom(data, noise):
    filt = one_template(data)
    rho2 = filt.snr_squared(filt.to_filter_rate(noise.astype(float)))[:, :, 0]  # [W, C, N]
    for offset in (0, filt.space.window // 3, filt.space.window - 200):
        sample = rho2[:, :, offset].ravel()
        assert stats.kstest(sample, stats.chi2(2).cdf).pvalue > 0.01, offset
        assert sample.mean() == pytest.approx(2.0, abs=0.3)


def test_the_noise_maximum_follows_the_law_of_independent_trials(data, noise):
    # max over N_eff independent chi2(2) trials: P(max < x) = (1 - exp(-x / 2)) ** N_eff
    filt = one_template(data)
    maxima = filt.snr_squared(filt.to_filter_rate(noise.astype(float)))[:, 0, 0].max(axis=-1)
    single = stats.chi2(2).cdf
    n_eff = -len(maxima) / np.sum(np.log(single(maxima)))  # maximum likelihood: the CDF**N_eff is uniform
    # trials are no more than the window's offsets and no fewer than its duration x the band a template fills
    assert 30 <= n_eff <= filt.space.window
    assert stats.kstest(maxima, lambda x: single(x) ** n_eff).pvalue > 0.01


def test_the_banks_fitting_factor_on_draws_from_the_prior_reaches_its_minimal_match(data):
    space = mf.TemplateSpace.from_data(data)
    masses = {"min": 25.0, "max": 40.0}
    bank, spectra = mf.place_bank(space, masses, minimal_match=0.95, seed=0, max_rejections=40)
    assert 1 < len(bank.masses) < bank.proposals
    assert np.all(bank.masses[:, 0] >= bank.masses[:, 1])
    draws = mf.draw_masses(np.random.default_rng(11), masses, 25)
    assert mf.fitting_factors(space, spectra, draws).min() >= 0.95
    # a template matches itself perfectly, at any time and phase
    assert mf.matches(spectra[0], spectra[:1])[0] == pytest.approx(1.0, abs=1e-6)


def test_only_simulated_noise_can_be_filtered_and_a_window_must_fit_twice_in_a_segment(data):
    with pytest.raises(ValueError, match="data.source 'gwosc' keeps none"):
        mf.TemplateSpace.from_data({**data, "source": "gwosc"})
    with pytest.raises(ValueError, match=r"segment_seconds \(1.5\) must be at least twice"):
        mf.TemplateSpace.from_data({**data, "segment_seconds": 1.5})


def test_the_oracle_detects_at_the_false_positive_rate_without_a_signal_and_surely_with_a_loud_one():
    snr = np.array([0.0, 4.0, 6.0, 8.0, 12.0, 20.0])
    eff = mf.oracle_efficiency(snr, fpr=0.01, n_trials=300.0, n_detectors=2)
    assert eff[0] == pytest.approx(0.01, rel=1e-6)
    assert np.all(np.diff(eff) > 0) and eff[-1] > 0.999
    # more independent trials (a longer window, a bigger bank) raise the threshold: lower efficiency where it is not yet 1
    assert np.all(mf.oracle_efficiency(snr[1:4], 0.01, 3000.0, 2) < eff[1:4])


def test_the_number_of_trials_is_recovered_from_simulated_maxima():
    rng = np.random.default_rng(0)
    maxima = stats.chi2(4).rvs(size=(4000, 250), random_state=rng).max(axis=1)  # two detectors, 250 independent times
    assert mf.trials_from_noise(maxima, n_detectors=2) == pytest.approx(250, rel=0.05)
