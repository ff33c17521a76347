import hashlib

import lal
import numpy as np
import pytest
from scipy import signal as sps

from conftest import tiny_config
from gwlora import gw
from gwlora.cli import StageError
from gwlora.dataset import build_split, load_split, save_split, segment_layout, simulated_psd, simulated_segment


def test_split_shape_labels_and_metadata():
    config = tiny_config()
    ds, record = build_split(config["data"], 0, "train")
    ds = ds.with_format("numpy")
    assert len(ds) == 48
    assert ds[0]["strain"].shape == (2, 16000)  # two detectors, 1 s at Whisper's 16 kHz
    labels = np.asarray(ds["label"])
    assert labels.sum() == record["n_signal"] == 24
    snr = np.asarray(ds["snr"])
    assert np.all(snr[labels == 0] == 0)
    lo, hi = config["data"]["snr"]["min"], config["data"]["snr"]["max"]
    assert np.all((snr[labels == 1] >= lo) & (snr[labels == 1] <= hi))
    detector_snr = np.stack(ds["detector_snr"])
    np.testing.assert_allclose(np.sqrt((detector_snr**2).sum(1)), snr, rtol=1e-6)
    for column in ("merger_time", "mass1", "distance_mpc"):
        values = np.asarray(ds[column])
        assert np.isnan(values[labels == 0]).all() and np.isfinite(values[labels == 1]).all()
    m1, m2 = np.asarray(ds["mass1"])[labels == 1], np.asarray(ds["mass2"])[labels == 1]
    assert np.all((m1 >= m2) & (m2 >= 10) & (m1 <= 50))
    assert record["detectors"] == ["H1", "L1"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_injected_snr_measured_on_whitened_data_matches_target(seed):
    """Optimal SNR recomputed from the whitened, band-passed signal is within 5% of its target."""
    data = tiny_config()["data"]
    fs = segment_layout(data).fs
    psd = simulated_psd(data)
    band = (data["band"]["min"], data["band"]["max"])
    for index in range(4):
        _, h, row = simulated_segment(data, seed, "train", index, 1)
        whitened = gw.bandpass(gw.whiten(h, psd, fs), fs, band)
        measured = np.sqrt(np.sum(whitened**2))
        assert measured == pytest.approx(row["snr"], rel=0.05)
        per_detector = np.sqrt(np.sum(whitened**2, axis=1))
        np.testing.assert_allclose(per_detector, row["detector_snr"], rtol=0.05)


def test_whitened_simulated_noise_is_unit_variance_and_flat():
    """Whitened noise: variance 1 within 3%; its spectrum flat within ±15% in 8 Hz bins across 20-1000 Hz."""
    data = tiny_config()["data"]
    fs = segment_layout(data).fs
    psd = simulated_psd(data)
    white = np.concatenate([gw.whiten(simulated_segment(data, 0, "val", i, 0)[0], psd, fs) for i in range(6)], axis=1)
    assert white.var() == pytest.approx(1.0, rel=0.03)
    freqs, pxx = sps.welch(white, fs=fs, nperseg=fs // 8, average="mean")
    in_band = (freqs >= 20) & (freqs <= 1000)
    ratio = pxx[:, in_band].mean(0) / (2.0 / fs)  # white noise of unit variance has one-sided PSD 2/fs
    assert np.all((ratio > 0.85) & (ratio < 1.15)), (ratio.min(), ratio.max())


def light_travel_time(a: str, b: str) -> float:
    """Light travel time between two detectors, in seconds (LAL's own figure)."""
    return lal.LightTravelTime(gw.detector(a), gw.detector(b)) / 1e9


def arrival_times(params: dict, detectors: list[str], merger_gps: float) -> list[float]:
    """GPS arrival time of the merger at each detector (LAL's time delay from the Earth's centre)."""
    gps = lal.LIGOTimeGPS(merger_gps)
    return [merger_gps + lal.TimeDelayFromEarthCenter(gw.detector(d).location, params["ra"], params["dec"], gps) for d in detectors]


def test_arrival_time_difference_within_light_travel_time():
    data = tiny_config()["data"]
    ltt = light_travel_time("H1", "L1")
    assert ltt == pytest.approx(0.01, abs=2e-4)
    rng = np.random.default_rng(0)
    delays = []
    for _ in range(500):
        params = gw.draw_injection(rng, data["injection"], data["snr"])
        h1, l1 = arrival_times(params, ["H1", "L1"], 1262304018.0)
        delays.append(l1 - h1)
    delays = np.abs(delays)
    assert delays.max() <= ltt and delays.max() > 0.8 * ltt  # bounded, and the sky is sampled widely


def test_projected_signal_peaks_arrive_within_light_travel_time():
    data = tiny_config()["data"]
    fs = data["sample_rate"]
    for index in range(6):
        _, h, _ = simulated_segment(data, 0, "test", index, 1)
        lag = abs(np.argmax(np.abs(h[0])) - np.argmax(np.abs(h[1]))) / fs
        assert lag <= light_travel_time("H1", "L1") + 2 / fs


def test_same_seed_is_byte_identical_and_other_seeds_differ(tmp_path):
    data = tiny_config()["data"]

    def digest(seed, split="val"):
        out = tmp_path / f"{seed}-{split}"
        save_split(*build_split(data, seed, split), out)
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}

    first = digest(3)
    assert digest(3) == first
    assert digest(4)["data-00000-of-00001.arrow"] != first["data-00000-of-00001.arrow"]
    assert digest(3, "test")["data-00000-of-00001.arrow"] != first["data-00000-of-00001.arrow"]


def test_save_and_load_round_trip(tmp_path):
    ds, record = build_split(tiny_config()["data"], 0, "test")
    save_split(ds, record, tmp_path / "test")
    loaded, rec = load_split(tmp_path / "test")
    assert rec == record
    assert np.array_equal(np.stack(loaded.with_format("numpy")["strain"]), np.stack(ds.with_format("numpy")["strain"]))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    ds, record = build_split(tiny_config()["data"], 0, "test")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(ds), "save_to_disk", boom)
    with pytest.raises(OSError):
        save_split(ds, record, tmp_path / "test")
    assert list(tmp_path.iterdir()) == []


def test_unknown_approximant_is_named():
    data = tiny_config()["data"]
    data["injection"]["approximant"] = "IMRPhenomNope"
    with pytest.raises(StageError, match="IMRPhenomNope"):
        build_split(data, 0, "val")


def test_load_rejects_foreign_directory(tmp_path):
    with pytest.raises(StageError, match="no build.json"):
        load_split(tmp_path)
