"""Stage `dataset`: labelled multi-detector strain windows, one split per job.

Output contract (what `features` and later stages read), one directory per split:

* a Hugging Face `datasets` dataset saved with ``save_to_disk`` whose rows are
  windows: ``strain`` (float32, [n_detectors, n_samples] at 16 kHz, whitened
  and band-passed), ``label`` (1 = signal, 0 = noise), ``snr`` (network
  optimal SNR of the injection, 0 for noise), ``detector_snr`` (per detector),
  the injection's parameters (``mass1``, ``mass2``, ``distance_mpc``, ``ra``,
  ``dec``, ``inclination``, ``polarization``, ``coa_phase``; NaN for noise),
  ``gps_time`` (window start) and ``merger_time`` (geocentric merger, seconds
  from the window start; NaN for noise);
* ``build.json``: the data config, seed and split that made it, the detector
  names and the sample rate, so every later stage knows the channels.

Sources: ``simulated``, stationary Gaussian noise coloured by a lalsimulation PSD
(Advanced LIGO design by default), independent per detector, with BBH
injections from lalsimulation (see :mod:`gwlora.gw`). Each window is cut from
the middle of a longer segment that is whitened as a whole, so whitening edge
effects stay outside the window. ``gwosc``: real coincident noise of the
configured GPS segments (see :mod:`gwlora.gwosc_source`), disjoint per split,
whitened with a PSD estimated from each stretch (Welch), with the same
injections. ``hub`` and ``audiofolder``: single-channel audio classification
data sets (see :mod:`gwlora.audio_sources`), same output contract with one
channel named ``audio``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import datasets
import numpy as np
from tqdm import tqdm

from . import gw
from .cli import StageError, atomic_dir, json_arg, run_stage, write_json
from .constants import AUDIO_SOURCES, SPLITS, WHISPER_SAMPLE_RATE

log = logging.getLogger("gwlora.dataset")

INJECTION_COLUMNS = ("mass1", "mass2", "distance_mpc", "ra", "dec", "inclination", "polarization", "coa_phase")
# Simulated segments of different splits start this far apart in GPS time (disjoint by construction).
SPLIT_GPS_OFFSET = 10_000_000


def window_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Independent, reproducible random stream per (seed, split, window): no leakage across splits."""
    return np.random.default_rng([seed, SPLITS.index(split), index])


def split_labels(n: int, signal_fraction: float, seed: int, split: str) -> np.ndarray:
    n_signal = round(n * signal_fraction)
    if n_signal in (0, n):
        raise StageError(f"split {split!r}: {n} windows with signal_fraction {signal_fraction} has one class only")
    labels = np.zeros(n, dtype=np.int64)
    labels[np.random.default_rng([seed, SPLITS.index(split)]).permutation(n)[:n_signal]] = 1
    return labels


def condition(segment: np.ndarray, psd: np.ndarray, fs: int, band: tuple[float, float], start: int, length: int) -> np.ndarray:
    """Whiten a segment [C, n] against `psd`, band-pass it, cut the window and resample it to 16 kHz."""
    white = gw.bandpass(gw.whiten(segment, psd, fs), fs, band)
    return gw.resample_to_whisper(white[:, start : start + length], fs).astype(np.float32)


class SegmentLayout(NamedTuple):
    """Where a window lies in the whitened segment it is cut from (its middle), in samples."""

    fs: int  # sample rate of the strain (data.sample_rate)
    n: int  # samples per segment
    start: int  # first sample of the window
    length: int  # samples per window


def segment_layout(data: dict) -> SegmentLayout:
    fs = data["sample_rate"]
    n = round(data["segment_seconds"] * fs)
    length = round(data["window_seconds"] * fs)
    return SegmentLayout(fs=fs, n=n, start=(n - length) // 2, length=length)


def simulated_psd(data: dict) -> np.ndarray:
    layout = segment_layout(data)
    # below 3/4 of the band's low edge the model PSD is held flat (it diverges there); the band-pass removes it
    return gw.design_psd(data["psd"], layout.n, layout.fs, 0.75 * data["band"]["min"])


def blank_row(n_det: int, window_gps: float) -> dict:
    row = {"label": 0, "snr": 0.0, "detector_snr": [0.0] * n_det, "gps_time": float(window_gps), "merger_time": float("nan")}
    row.update({k: float("nan") for k in INJECTION_COLUMNS})
    return row


def inject(noise: np.ndarray, psd: np.ndarray, data: dict, rng: np.random.Generator, segment_gps: float, row: dict):
    """Add a random BBH signal at its target network SNR (against `psd`) to a raw segment; fills `row`.

    Returns (noise + signal, signal).
    """
    fs, n = segment_layout(data)[:2]
    band = (data["band"]["min"], data["band"]["max"])
    params = gw.draw_injection(rng, data["injection"], data["snr"])
    merger_gps = row["gps_time"] + params["merger_position"] * data["window_seconds"]
    h = gw.project_waveform(params, list(data["detectors"]), fs, n, segment_gps, merger_gps, data["injection"]["approximant"], data["injection"]["f_lower"])
    rho = gw.optimal_snr(h, psd, fs, band)
    scale = params["target_snr"] / np.sqrt(np.sum(rho**2))
    h *= scale
    row.update({k: params[k] for k in INJECTION_COLUMNS if k in params})
    row.update(
        label=1,
        snr=params["target_snr"],
        detector_snr=[float(r) for r in rho * scale],
        distance_mpc=gw.REFERENCE_DISTANCE_MPC / scale,
        merger_time=merger_gps - row["gps_time"],
    )
    return noise + h, h


def simulated_segment(data: dict, seed: int, split: str, index: int, label: int):
    """One raw segment: (noise + signal [C, n], the injected signal [C, n] or None, window metadata)."""
    fs, n, start = segment_layout(data)[:3]
    psd = simulated_psd(data)
    rng = window_rng(seed, split, index)
    segment_gps = data["gps_start"] + SPLITS.index(split) * SPLIT_GPS_OFFSET + index * data["segment_seconds"]
    noise = np.stack([gw.coloured_noise(rng, psd, n, fs) for _ in data["detectors"]])
    row = blank_row(len(data["detectors"]), segment_gps + start / fs)
    if not label:
        return noise, None, row
    segment, h = inject(noise, psd, data, rng, segment_gps, row)
    return segment, h, row


def simulated_window(data: dict, seed: int, split: str, index: int, label: int) -> dict:
    """One conditioned window of simulated data, with a BBH injection when `label` is 1."""
    layout = segment_layout(data)
    segment, _, row = simulated_segment(data, seed, split, index, label)
    band = (data["band"]["min"], data["band"]["max"])
    row["strain"] = condition(segment, simulated_psd(data), layout.fs, band, layout.start, layout.length)
    return row


def features_schema(n_det: int, n_samples: int) -> datasets.Features:
    columns = {
        "strain": datasets.Array2D(shape=(n_det, n_samples), dtype="float32"),
        "label": datasets.Value("int64"),
        "snr": datasets.Value("float64"),
        "detector_snr": datasets.Sequence(datasets.Value("float64"), length=n_det),
        "gps_time": datasets.Value("float64"),
        "merger_time": datasets.Value("float64"),
    }
    columns.update({k: datasets.Value("float64") for k in INJECTION_COLUMNS})
    return datasets.Features(columns)


def simulated_rows(data: dict, seed: int, split: str, labels: np.ndarray):
    for i, label in enumerate(tqdm(labels, desc=f"simulate {split}", unit="window", mininterval=1.0)):
        yield simulated_window(data, seed, split, i, label)


def gwosc_rows(data: dict, seed: int, split: str, labels: np.ndarray, manifest: str | Path):
    """Windows cut from real coincident GWOSC noise of this split's segments, whitened with a Welch PSD."""
    from . import gwosc_source

    fs, n, start, length = segment_layout(data)
    detectors = list(data["detectors"])
    band = (data["band"]["min"], data["band"]["max"])
    cfg = data["gwosc"]
    files = gwosc_source.cached_files(manifest, detectors)
    stretches = gwosc_source.coincident_stretches(
        files, cfg["segments"][split], cfg["dq_flags"], cfg["exclude"],
        min_seconds=max(data["segment_seconds"], cfg["min_stretch_seconds"]),
    )
    # candidate windows: adjacent (disjoint) windows whose whole segment lies inside a good stretch
    margin = start / fs
    candidates = [
        (s, e, s + margin + k * data["window_seconds"])
        for s, e in stretches
        for k in range(int((e - s - data["segment_seconds"]) // data["window_seconds"]) + 1)
    ]
    if len(candidates) < len(labels):
        raise StageError(
            f"split {split!r}: needs {len(labels)} windows but data.gwosc.segments.{split} holds only "
            f"{len(candidates)} ({sum(e - s for s, e in stretches)} s of coincident good data in "
            f"{len(stretches)} stretch(es) of at least {max(data['segment_seconds'], cfg['min_stretch_seconds'])} s)"
        )
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    chosen = sorted(rng.choice(len(candidates), size=len(labels), replace=False))
    loaded: tuple | None = None
    bar = tqdm(total=len(labels), desc=f"gwosc {split}", unit="window", mininterval=1.0)
    for i, (c, label) in enumerate(zip(chosen, labels)):
        s, e, window_gps = candidates[c]
        if loaded is None or loaded[0] != (s, e):
            strain = np.stack([gwosc_source.load_stretch(files[d], s, e, fs) for d in detectors])
            psd = np.stack([gw.welch_psd(x, fs, n, 0.75 * band[0]) for x in strain])
            loaded = ((s, e), strain, psd)
        _, strain, psd = loaded
        a = round((window_gps - s) * fs) - start
        segment = strain[:, a : a + n]
        row = blank_row(len(detectors), window_gps)
        if label:
            segment, _ = inject(segment, psd, data, window_rng(seed, split, i), window_gps - start / fs, row)
        row["strain"] = condition(segment, psd, fs, band, start, length)
        bar.update()
        yield row
    bar.close()


def build_split(
    data: dict, seed: int, split: str, strain_manifest: str | Path | None = None, cache_dir: str | Path = "resources/audio"
) -> tuple[datasets.Dataset, dict]:
    """Build one split of windows; returns the dataset and its build record."""
    if split not in SPLITS:
        raise StageError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    if data["source"] in AUDIO_SOURCES:
        from .audio_sources import build_audio_split

        return build_audio_split(data, seed, split, cache_dir)
    n = int(data["splits"][split])
    labels = split_labels(n, data["signal_fraction"], seed, split)
    gw.approximant(data["injection"]["approximant"])  # fail before any work on an unknown one
    if data["source"] == "simulated":
        rows = list(simulated_rows(data, seed, split, labels))
    else:  # gwosc
        if strain_manifest is None:
            raise StageError("data.source gwosc needs the manifest of the downloaded strain files (--strain-manifest)")
        rows = list(gwosc_rows(data, seed, split, labels, strain_manifest))
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    detectors = list(data["detectors"])
    ds = datasets.Dataset.from_dict(columns, features=features_schema(len(detectors), rows[0]["strain"].shape[-1]))
    record = {
        "split": split,
        "seed": seed,
        "source": data["source"],
        "detectors": detectors,
        "sample_rate": WHISPER_SAMPLE_RATE,
        "n_windows": n,
        "n_signal": int(labels.sum()),
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
    p.add_argument("--seed", type=int, required=True, help="the config's seed (noise, injections and labels of every split)")
    p.add_argument("--split", choices=SPLITS, required=True, help="the split to build")
    p.add_argument("--strain-manifest", help="manifest of the downloaded strain files (data.source gwosc)")
    p.add_argument("--cache", default="resources/audio", help="download cache of audiofolder archives")
    p.add_argument("--test-set", help="the shifted test set this split is (evaluation.test_sets), recorded in build.json")
    p.add_argument("--out", required=True, help="output directory of the split")


def _run(args):
    """Simulate one split of labelled strain windows."""
    ds, record = build_split(args.data_config, args.seed, args.split, args.strain_manifest, args.cache)
    if args.test_set:
        record["test_set"] = args.test_set
    save_split(ds, record, args.out)
    channels = "channels" if record["detectors"] == ["audio"] else "detectors"  # an audio set's one channel is no detector
    log.info("wrote %s: %d windows (%d with a signal), %s %s", args.out, record["n_windows"], record["n_signal"], channels, ",".join(record["detectors"]))


def main(argv=None) -> int:
    return run_stage("dataset", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
