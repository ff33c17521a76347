import numpy as np
import pytest

from conftest import tiny_config
from gwlora.cli import StageError
from gwlora.dataset import (
    MAX_INTERDETECTOR_DELAY_S,
    build_split,
    load_split,
    optimal_snr,
    save_split,
    toy_injection,
)


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
    assert np.all((snr[labels == 1] >= 10) & (snr[labels == 1] <= 25))
    assert np.isnan(np.asarray(ds["merger_time"])[labels == 0]).all()
    assert record["detectors"] == ["H1", "L1"]


def test_same_seed_is_identical_and_splits_differ():
    data = tiny_config()["data"]
    a, _ = build_split(data, 3, "val")
    b, _ = build_split(data, 3, "val")
    c, _ = build_split(data, 4, "val")
    d, _ = build_split(data, 3, "test")
    strain = lambda ds: np.stack(ds.with_format("numpy")["strain"])  # noqa: E731
    assert np.array_equal(strain(a), strain(b))
    assert not np.array_equal(strain(a), strain(c))
    assert not np.array_equal(strain(a)[:8], strain(d)[:8])


def test_injection_hits_target_network_snr_within_light_travel_time():
    data = tiny_config()["data"]
    rng = np.random.default_rng(0)
    t = np.arange(2048) / 2048
    for target in (8.0, 15.0, 40.0):
        h, merger, delays = toy_injection(rng, 2, t, data, target)
        assert np.sqrt(np.sum(optimal_snr(h) ** 2)) == pytest.approx(target, rel=1e-9)
        assert delays[0] == 0 and abs(delays[1]) <= MAX_INTERDETECTOR_DELAY_S
        assert 0 < merger < 1


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


def test_load_rejects_foreign_directory(tmp_path):
    with pytest.raises(StageError, match="no build.json"):
        load_split(tmp_path)
