"""Real detector noise from the Gravitational Wave Open Science Center (GWOSC).

* :func:`locate` finds the strain files (HDF5) of each detector that cover the
  configured GPS segments, with the ``gwosc`` package, unless the config lists
  the files itself (``data.gwosc.files``: a mirror, or a test server);
* :func:`fetch` downloads them (progress, retries, resume, SHA-256 manifest)
  and validates each one before use (:func:`read_strain` must accept it);
* :func:`coincident_stretches` keeps only the times where every detector has
  data, no NaN, and the required data-quality flags set, minus excluded times
  (e.g. catalogued events);
* :func:`load_stretch` returns the strain of one stretch, resampled to the
  working rate; the dataset stage cuts windows from it, injects signals and
  whitens with a PSD estimated from the stretch itself (Welch);
* :func:`main` is the `download` stage (``python -m gwlora.gwosc_source``,
  ``gwlora-download``): fetch the configured files into the shared cache.

The GWOSC HDF5 layout read here: ``strain/Strain`` (attributes ``Xstart``,
``Xspacing``), ``meta/Detector``, ``meta/GPSstart``, ``meta/Duration`` and the
1 Hz bit mask ``quality/simple/DQmask`` with bit names in
``quality/simple/DQShortnames``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import h5py
import numpy as np
from scipy import signal as sps

from .cli import StageError, json_arg, run_stage
from .constants import SPLITS
from .download import (
    DEFAULT_DEADLINE_S,
    download,
    human_size,
    manifest_entry,
    read_manifest,
    url_file_name,
    verify_manifest,
    write_manifest,
)

log = logging.getLogger("gwlora.gwosc")



@dataclass(frozen=True)
class StrainFile:
    detector: str
    path: Path
    gps_start: float
    duration: float
    sample_rate: int


# --------------------------------------------------------------------------- reading and validating


def _text(value) -> str:
    value = value[()] if hasattr(value, "shape") else value
    if isinstance(value, np.ndarray):
        value = value.item() if value.size == 1 else value[0]
    return value.decode() if isinstance(value, bytes) else str(value)


def read_header(path: str | Path) -> StrainFile:
    """Open a GWOSC strain file and check its structure; errors name the file."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            strain = f["strain/Strain"]
            detector = _text(f["meta/Detector"])
            gps_start = float(strain.attrs["Xstart"])
            spacing = float(strain.attrs["Xspacing"])
            duration = float(f["meta/Duration"][()])
            n = strain.shape[0]
            f["quality/simple/DQmask"]
            f["quality/simple/DQShortnames"]
    except (OSError, KeyError) as exc:
        raise StageError(f"{path}: not a readable GWOSC strain file ({exc})") from None
    sample_rate = round(1.0 / spacing)
    if n != round(duration * sample_rate):
        raise StageError(f"{path}: holds {n} samples, its header promises {duration} s at {sample_rate} Hz")
    return StrainFile(detector, path, gps_start, duration, sample_rate)


def read_strain(path: str | Path) -> tuple[StrainFile, np.ndarray, np.ndarray, list[str]]:
    """(header, strain, 1 Hz data-quality mask, mask bit names) of one file."""
    header = read_header(path)
    with h5py.File(path, "r") as f:
        strain = np.asarray(f["strain/Strain"][()], dtype=np.float64)
        mask = np.asarray(f["quality/simple/DQmask"][()], dtype=np.int64)
        names = [_text(n) if not isinstance(n, bytes) else n.decode() for n in f["quality/simple/DQShortnames"][()]]
    return header, strain, mask, names


def validate_file(expected_detector: str):
    """A download validator: the file must be a well-formed GWOSC strain file of this detector."""

    def check(path: Path) -> None:
        header = read_header(path)
        if header.detector != expected_detector:
            raise StageError(f"{path}: strain of {header.detector}, expected {expected_detector}")

    return check


# --------------------------------------------------------------------------- locating and fetching


def all_segments(gwosc: dict) -> list[tuple[int, int]]:
    return [tuple(s) for split in SPLITS for s in gwosc["segments"][split]]


def locate(detectors: list[str], gwosc: dict) -> dict[str, list[dict]]:
    """The files to fetch per detector: from the config, or found with the `gwosc` package."""
    if gwosc.get("files"):
        missing = [d for d in detectors if not gwosc["files"].get(d)]
        if missing:
            raise StageError(f"data.gwosc.files lists no file for detector(s) {', '.join(missing)}")
        return {d: [dict(f) for f in gwosc["files"][d]] for d in detectors}
    from gwosc.locate import get_urls

    found: dict[str, list[dict]] = {}
    for d in detectors:
        urls: list[str] = []
        for start, end in all_segments(gwosc):
            try:
                hits = get_urls(d, start, end, sample_rate=gwosc["source_sample_rate"], format="hdf5", host=gwosc["host"])
            except Exception as exc:  # noqa: BLE001 - the gwosc client raises requests', ValueError, ...
                raise StageError(f"GWOSC: cannot list {d} files for GPS {start}-{end} at {gwosc['host']}: {exc}") from exc
            if not hits:
                raise StageError(f"GWOSC has no {d} strain for GPS segment {start}-{end} (data.gwosc.segments)")
            urls += [u for u in hits if u not in urls]
        found[d] = [{"url": u} for u in urls]
    return found


def fetch(detectors: list[str], gwosc: dict, manifest_path: str | Path, progress: bool = True) -> dict:
    """Download (or reuse) every file into the manifest's directory, validate it, record it in the SHA-256 manifest.

    The cache directory may be shared by several experiments, each with its own manifest:
    a file that another experiment is downloading is waited for, not fetched twice.
    Each file's download must finish within ``data.gwosc.download_deadline_s``.
    """
    manifest_path = Path(manifest_path)
    cache_dir = manifest_path.parent
    cache_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(manifest_path)
    deadline = gwosc.get("download_deadline_s") or DEFAULT_DEADLINE_S
    for d, files in locate(detectors, gwosc).items():
        for entry in files:
            name = url_file_name(entry["url"])
            known = manifest.get(name, {})
            sha = entry.get("sha256") or known.get("sha256")
            download(
                entry["url"], cache_dir / name, sha256=sha, validate=validate_file(d), progress=progress, deadline=deadline
            )
            manifest[name] = {**manifest_entry(cache_dir / name, entry["url"]), "detector": d}
            write_manifest(manifest_path, manifest)
    verify_manifest(cache_dir, manifest)
    return manifest


def cached_files(manifest_path: str | Path, detectors: list[str]) -> dict[str, list[StrainFile]]:
    """The files a manifest lists (checked against their SHA-256), per detector, in time order."""
    manifest_path = Path(manifest_path)
    cache_dir = manifest_path.parent
    manifest = read_manifest(manifest_path)
    if not manifest:
        raise StageError(f"{manifest_path}: no such download manifest; run the download rule first")
    verify_manifest(cache_dir, manifest)
    files: dict[str, list[StrainFile]] = {d: [] for d in detectors}
    for name, entry in manifest.items():
        if entry.get("detector") in files:
            files[entry["detector"]].append(read_header(cache_dir / name))
    for d, fs in files.items():
        if not fs:
            raise StageError(f"{cache_dir}: no strain file of detector {d}")
        fs.sort(key=lambda f: f.gps_start)
    return files


# --------------------------------------------------------------------------- valid coincident data


def good_seconds(files: list[StrainFile], required: list[str], start: int, end: int) -> np.ndarray:
    """Boolean per GPS second in [start, end): data present, finite, and every required DQ bit set."""
    good = np.zeros(end - start, dtype=bool)
    for sf in files:
        header, strain, mask, names = read_strain(sf.path)
        missing = [r for r in required if r not in names]
        if missing:
            raise StageError(f"{sf.path}: data-quality flag(s) {', '.join(missing)} not in this file ({', '.join(names)})")
        bits = sum(1 << names.index(r) for r in required)
        per_second = strain.reshape(-1, header.sample_rate)
        ok = ((mask & bits) == bits) & np.isfinite(per_second).all(axis=1)
        t0 = int(round(header.gps_start))
        lo, hi = max(start, t0), min(end, t0 + len(ok))
        if lo < hi:
            good[lo - start : hi - start] = ok[lo - t0 : hi - t0]
    return good


def coincident_stretches(
    files: dict[str, list[StrainFile]], segments: list[list[int]], required: list[str],
    exclude: list[list[float]], min_seconds: float,
) -> list[tuple[int, int]]:
    """GPS [start, end) stretches inside `segments` where all detectors are good, at least `min_seconds` long."""
    stretches = []
    for start, end in segments:
        start, end = int(start), int(end)
        good = np.ones(end - start, dtype=bool)
        for det_files in files.values():
            good &= good_seconds(det_files, required, start, end)
        for a, b in exclude:
            lo, hi = max(start, int(np.floor(a))), min(end, int(np.ceil(b)))
            if lo < hi:
                good[lo - start : hi - start] = False
        edges = np.flatnonzero(np.diff(np.concatenate([[0], good.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):
            if b - a >= min_seconds:
                stretches.append((start + int(a), start + int(b)))
    return stretches


def load_stretch(files: list[StrainFile], start: int, end: int, sample_rate: int) -> np.ndarray:
    """Strain of one detector over GPS [start, end), resampled to `sample_rate`."""
    pieces, t = [], start
    for sf in files:
        t0, t1 = sf.gps_start, sf.gps_start + sf.duration
        if t1 <= t or t0 >= end:
            continue
        if t0 > t:
            raise StageError(f"gap in the strain files before GPS {t0} (needed from {t})")
        _, strain, _, _ = read_strain(sf.path)
        a, b = round((t - t0) * sf.sample_rate), round((min(end, t1) - t0) * sf.sample_rate)
        pieces.append((sf.sample_rate, strain[a:b]))
        t = min(end, t1)
    if t < end:
        raise StageError(f"no strain file covers GPS {t}-{end}")
    rates = {r for r, _ in pieces}
    if len(rates) != 1:
        raise StageError(f"strain files at mixed sample rates {sorted(rates)}")
    source_rate = rates.pop()
    data = np.concatenate([p for _, p in pieces])
    if source_rate == sample_rate:
        return data
    g = gcd(source_rate, sample_rate)
    return sps.resample_poly(data, sample_rate // g, source_rate // g)


# --------------------------------------------------------------------------- the `download` stage


def _parser(p):
    p.add_argument("--data-config", type=json_arg, required=True, help="the validated `data` config section, as JSON")
    p.add_argument("--manifest", required=True, help="manifest to write; files go to its directory (a shared cache)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _run(args):
    """Download the GWOSC strain files the config needs into a shared, checksummed cache."""
    data = args.data_config
    if data["source"] != "gwosc":
        raise StageError(f"data.source {data['source']!r} downloads nothing")
    manifest = fetch(list(data["detectors"]), data["gwosc"], args.manifest, progress=not args.no_progress)
    total = sum(e["size"] for e in manifest.values())
    log.info("%d strain files (%s) verified in %s", len(manifest), human_size(total), Path(args.manifest).parent)


def main(argv=None) -> int:
    return run_stage("download", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
