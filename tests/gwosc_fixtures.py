"""Small files in GWOSC's HDF5 strain format."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from gwlora import gw

DQ_NAMES = ["DATA", "CBC_CAT1", "CBC_CAT2", "CBC_CAT3", "BURST_CAT1", "BURST_CAT2", "BURST_CAT3"]


def write_gwosc_file(
    path: Path, detector: str, gps_start: int, duration: int, fs: int = 4096, seed: int = 0,
    bad_seconds: tuple[int, ...] = (), nan_seconds: tuple[int, ...] = (),
) -> Path:
    """A GWOSC-layout strain file of design-PSD Gaussian noise; `bad_seconds` lack CBC_CAT2, `nan_seconds` hold NaN."""
    n = duration * fs
    psd = gw.design_psd("aLIGODesignSensitivityP1200087", n, fs, 10.0)
    strain = gw.coloured_noise(np.random.default_rng([seed, gps_start, ord(detector[0])]), psd, n, fs)
    mask = np.full(duration, 0b1111111, dtype=np.int32)
    for s in bad_seconds:
        mask[s] &= ~0b100  # CBC_CAT2 fails
    for s in nan_seconds:
        strain[s * fs : (s + 1) * fs] = np.nan
        mask[s] = 0
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("strain/Strain", data=strain)
        ds.attrs.update(Xstart=float(gps_start), Xspacing=1.0 / fs, Npoints=n, Xunits="second")
        f["meta/Detector"] = detector
        f["meta/GPSstart"] = gps_start
        f["meta/Duration"] = duration
        f["quality/simple/DQmask"] = mask
        f["quality/simple/DQShortnames"] = np.array(DQ_NAMES, dtype="S")
    return path
