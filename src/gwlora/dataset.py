"""Stage `dataset`: labelled multi-detector strain windows, one split per job.

Output contract (what `features` and later stages read), one directory per split:

* a Hugging Face `datasets` dataset saved with ``save_to_disk`` whose rows are
  windows: ``strain`` (float32, shape [n_detectors, n_samples] at 16 kHz,
  conditioned: whitened and band-passed), ``label`` (1 = signal, 0 = noise),
  ``snr`` (network optimal SNR of the injection, 0 for noise) and
  ``merger_time`` (seconds from the window start, NaN for noise);
* ``build.json``: the data config, seed and split that made it, the detector
  names and the sample rate, so every later stage knows the channels.

The ``toy`` source is a fast, self-contained simulation: white Gaussian noise
per detector (as after whitening) and a Newtonian-like chirp, delayed by up to
the H1-L1 light travel time and scaled to a target network optimal SNR.
"""

from __future__ import annotations

import logging
from math import gcd
from pathlib import Path

import datasets
import numpy as np
from scipy import signal as sps
from tqdm import tqdm

from .cli import StageError, atomic_dir, json_arg, run_stage, write_json
from .config import WHISPER_SAMPLE_RATE

log = logging.getLogger("gwlora.dataset")

SPLITS = ("train", "val", "test")
MAX_INTERDETECTOR_DELAY_S = 0.010  # H1-L1 light travel time is 10.0 ms
BAND_HZ = (20.0, 1000.0)


def split_rng(seed: int, split: str) -> np.random.Generator:
    """Independent, reproducible random stream per (seed, split): no leakage across splits."""
    return np.random.default_rng([seed, SPLITS.index(split)])


def white_noise(rng: np.random.Generator, n_det: int, n_samples: int) -> np.ndarray:
    """Unit-variance white Gaussian noise: whitened detector noise."""
    return rng.standard_normal((n_det, n_samples))


def toy_chirp(t: np.ndarray, merger_time: float, f_min: float, f_max: float, phase: float) -> np.ndarray:
    """A chirp whose frequency sweeps f_min -> f_max as (time to merger)^(-3/8), amplitude ∝ f^(2/3)."""
    tau = np.clip(merger_time - t, 0.0, None)
    # Choose tau0 so that f(window start) = f_min: f = f_max * (1 + tau/tau0)^(-3/8).
    tau_start = max(merger_time - t[0], 1e-3)
    tau0 = tau_start / ((f_max / f_min) ** (8.0 / 3.0) - 1.0)
    freq = f_max * (1.0 + tau / tau0) ** (-3.0 / 8.0)
    dt = t[1] - t[0]
    ph = phase + 2 * np.pi * np.cumsum(freq) * dt
    amp = (freq / f_max) ** (2.0 / 3.0)
    amp[t > merger_time] *= np.exp(-(t[t > merger_time] - merger_time) / 0.005)  # short ringdown
    return amp * np.sin(ph)


def optimal_snr(whitened_signal: np.ndarray) -> np.ndarray:
    """Per-detector optimal SNR of a signal in unit-variance whitened noise: sqrt(sum h^2)."""
    return np.sqrt(np.sum(whitened_signal**2, axis=-1))


def toy_injection(rng, n_det: int, t: np.ndarray, data: dict, target_snr: float):
    """One multi-detector signal scaled to `target_snr` (network optimal SNR).

    Returns the strain [n_det, n_samples], the merger time at the first
    detector and each detector's arrival delay relative to the first.
    """
    duration = t[-1] - t[0]
    merger_time = rng.uniform(0.5 * duration, 0.95 * duration)
    f_lo, f_hi = data["frequency"]["min"], data["frequency"]["max"]
    h = np.empty((n_det, t.size))
    delays = np.zeros(n_det)
    for d in range(n_det):
        delays[d] = rng.uniform(-MAX_INTERDETECTOR_DELAY_S, MAX_INTERDETECTOR_DELAY_S) if d else 0.0
        antenna = rng.uniform(0.3, 1.0)
        h[d] = antenna * toy_chirp(t, merger_time + delays[d], f_lo, f_hi, rng.uniform(0, 2 * np.pi))
    network = np.sqrt(np.sum(optimal_snr(h) ** 2))
    return h * (target_snr / network), merger_time, delays


def condition(strain: np.ndarray, sample_rate: int) -> np.ndarray:
    """Band-pass to the detector band and resample to Whisper's 16 kHz."""
    high = min(BAND_HZ[1], 0.45 * sample_rate)
    sos = sps.butter(8, [BAND_HZ[0], high], btype="bandpass", fs=sample_rate, output="sos")
    filtered = sps.sosfiltfilt(sos, strain, axis=-1)
    g = gcd(WHISPER_SAMPLE_RATE, sample_rate)
    return sps.resample_poly(filtered, WHISPER_SAMPLE_RATE // g, sample_rate // g, axis=-1).astype(np.float32)


def build_split(data: dict, seed: int, split: str) -> tuple[datasets.Dataset, dict]:
    """Simulate one split; returns the dataset and its build record."""
    if split not in SPLITS:
        raise StageError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    if data["source"] != "toy":
        raise StageError(f"data.source {data['source']!r} is not supported by this version")
    n = int(data["splits"][split])
    n_signal = round(n * data["signal_fraction"])
    if n_signal in (0, n):
        raise StageError(f"split {split!r}: {n} windows with signal_fraction {data['signal_fraction']} has one class only")
    fs = int(data["sample_rate"])
    n_samples = round(data["window_seconds"] * fs)
    detectors = list(data["detectors"])
    rng = split_rng(seed, split)
    labels = np.zeros(n, dtype=np.int64)
    labels[rng.permutation(n)[:n_signal]] = 1
    t = np.arange(n_samples) / fs

    rows = {"strain": [], "label": [], "snr": [], "merger_time": []}
    for label in tqdm(labels, desc=f"simulate {split}", unit="window", mininterval=1.0):
        strain = white_noise(rng, len(detectors), n_samples)
        snr, merger_time = 0.0, float("nan")
        if label:
            snr = float(rng.uniform(data["snr"]["min"], data["snr"]["max"]))
            h, merger_time, _ = toy_injection(rng, len(detectors), t, data, snr)
            strain = strain + h
        rows["strain"].append(condition(strain, fs))
        rows["label"].append(int(label))
        rows["snr"].append(snr)
        rows["merger_time"].append(float(merger_time))

    n_out = rows["strain"][0].shape[-1]
    features = datasets.Features(
        {
            "strain": datasets.Array2D(shape=(len(detectors), n_out), dtype="float32"),
            "label": datasets.Value("int64"),
            "snr": datasets.Value("float64"),
            "merger_time": datasets.Value("float64"),
        }
    )
    ds = datasets.Dataset.from_dict(rows, features=features)
    record = {
        "split": split,
        "seed": seed,
        "source": data["source"],
        "detectors": detectors,
        "sample_rate": WHISPER_SAMPLE_RATE,
        "n_windows": n,
        "n_signal": int(n_signal),
        "data_config": data,
    }
    return ds, record


def save_split(ds: datasets.Dataset, record: dict, out: str | Path) -> None:
    with atomic_dir(out) as tmp:
        ds.save_to_disk(str(tmp))
        write_json(Path(tmp) / "build.json", record)


def load_split(path: str | Path) -> tuple[datasets.Dataset, dict]:
    from .cli import read_json

    path = Path(path)
    if not (path / "build.json").exists():
        raise StageError(f"{path} is not a dataset split made by the dataset stage (no build.json)")
    return datasets.load_from_disk(str(path)), read_json(path / "build.json")


def _parser(p):
    p.add_argument("--data-config", type=json_arg, required=True, help="the validated `data` config section, as JSON")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--split", choices=SPLITS, required=True)
    p.add_argument("--out", required=True, help="output directory of the split")


def _run(args):
    """Simulate one split of labelled strain windows."""
    ds, record = build_split(args.data_config, args.seed, args.split)
    save_split(ds, record, args.out)
    log.info("wrote %s: %d windows (%d with a signal), detectors %s", args.out, record["n_windows"], record["n_signal"], ",".join(record["detectors"]))


def main(argv=None) -> int:
    return run_stage("dataset", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
