"""Stage `features`: Whisper log-mel features, computed once per split and cached.

Output contract, one directory per split (training reads it and never
re-extracts per epoch):

* ``features.npy``: float32 [n_windows, n_channels, n_mels, n_frames], the
  clip's own frames (100 per second); a model with 30 s context pads them
  itself (see :mod:`gwlora.model`), so the cache is the same for both contexts;
* ``labels.npy`` (int64) and ``snr.npy`` (float64), row-aligned;
* ``meta.json``: split, channels, frame count, mel bins, source paths, and
  the size and SHA-256 of each array file, checked whenever the cache is
  loaded (a truncated or altered file is named, with how to rebuild it).

Extraction is batched: many windows and channels at once through the
arithmetic of ``WhisperFeatureExtractor``'s torch path (see :func:`extract`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import WhisperFeatureExtractor

from .cli import StageError, atomic_dir, read_json, run_stage, write_json
from .download import sha256_of

log = logging.getLogger("gwlora.features")


def clip_extractor(model_dir: str | Path, n_samples: int) -> WhisperFeatureExtractor:
    """The model's feature extractor, set to a clip of `n_samples` instead of 30 s."""
    extractor = WhisperFeatureExtractor.from_pretrained(str(model_dir))
    if n_samples > extractor.n_samples:
        raise StageError(f"clip of {n_samples} samples is longer than Whisper's {extractor.n_samples}")
    extractor.n_samples = n_samples
    extractor.nb_max_frames = n_samples // extractor.hop_length
    return extractor


def extract(strain: np.ndarray, extractor: WhisperFeatureExtractor, chunk: int = 16) -> np.ndarray:
    """Log-mel of a batch of windows: [B, C, samples] -> [B, C, n_mels, frames].

    The same arithmetic as ``WhisperFeatureExtractor``'s torch path (Hann STFT,
    power, mel filter bank, log10, per-example floor at max - 8, (x + 4) / 4),
    on many channels at once, in chunks of `chunk` channels so that each
    chunk's spectra stay in the CPU cache: about 2x faster than one extractor
    call over the whole batch and 3x faster than one call per channel
    (docs/benchmarks.md, comparison 5).
    """
    b, c, n = strain.shape
    flat = torch.from_numpy(np.ascontiguousarray(strain.reshape(b * c, n), dtype=np.float32))
    if n != extractor.n_samples:  # as padding="max_length" with zeros, or truncation
        flat = torch.nn.functional.pad(flat, (0, extractor.n_samples - n)) if n < extractor.n_samples else flat[:, : extractor.n_samples]
    window = torch.hann_window(extractor.n_fft)
    mel = torch.from_numpy(extractor.mel_filters).float().T.contiguous()
    with torch.inference_mode():
        out = torch.cat([_log_mel(x, window, mel, extractor.hop_length) for x in flat.split(chunk)])
    return out.numpy().reshape(b, c, *out.shape[1:])


def _log_mel(x: torch.Tensor, window: torch.Tensor, mel: torch.Tensor, hop: int) -> torch.Tensor:
    spec = torch.stft(x, window.shape[0], hop, window=window, return_complex=True)[..., :-1]
    power = spec.real.square() + spec.imag.square()
    log_spec = (mel @ power).clamp_(min=1e-10).log10_()
    floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0
    return torch.maximum(log_spec, floor).add_(4.0).div_(4.0)


def extract_split(data_dir: str | Path, model_dir: str | Path, out: str | Path, batch_size: int = 64) -> dict:
    # imported here, so that reading a cache needs neither `datasets` nor LALSuite
    from .base_model import load_record
    from .dataset import load_split

    ds, build = load_split(data_dir)
    ds = ds.with_format("numpy")
    n = len(ds)
    if n == 0:
        raise StageError(f"{data_dir}: the split has no windows")
    n_samples = ds[0]["strain"].shape[-1]
    extractor = clip_extractor(model_dir, n_samples)
    first = extract(ds[:1]["strain"], extractor)
    with atomic_dir(out) as tmp:
        feats = np.lib.format.open_memmap(tmp / "features.npy", mode="w+", dtype=np.float32, shape=(n, *first.shape[1:]))
        with tqdm(total=n, desc=f"log-mel {build['split']}", unit="window", mininterval=1.0) as bar:
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                strain = ds[start:stop]["strain"]
                if not np.isfinite(strain).all():
                    raise StageError(f"{data_dir}: non-finite strain in windows {start}..{stop - 1}")
                feats[start:stop] = extract(strain, extractor)
                bar.update(stop - start)
        feats.flush()
        del feats
        meta = write_labels(
            tmp, ds["label"], ds["snr"], first.shape,
            split=build["split"], channels=build["detectors"], sample_rate=extractor.sampling_rate,
            base_model=load_record(model_dir)["source"], label_names=build.get("label_names"),  # audio data names its classes
        )
    return meta


def write_labels(out: Path, labels, snr, shape: tuple, **meta) -> dict:
    """A cache's labels.npy, snr.npy and meta.json beside its features.npy of `shape` (windows, channels, mels, frames)."""
    labels = np.asarray(labels, dtype=np.int64)
    np.save(out / "labels.npy", labels)
    np.save(out / "snr.npy", np.asarray(snr, dtype=np.float64))
    meta = {**meta, "n_windows": len(labels), "n_mels": int(shape[2]), "n_frames": int(shape[3])}
    meta["files"] = {name: {"bytes": (out / name).stat().st_size, "sha256": sha256_of(out / name)} for name in CACHE_FILES}
    write_json(out / "meta.json", meta)
    return meta


def write_features(out: str | Path, features: np.ndarray, labels, snr, **meta) -> dict:
    """A feature cache held in memory, written in the features stage's format (toy sets, benchmarks)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    features = np.ascontiguousarray(features, dtype=np.float32)
    np.save(out / "features.npy", features)
    return write_labels(out, labels, snr, features.shape, **meta)


CACHE_FILES = ("features.npy", "labels.npy", "snr.npy")


def verify_cache(path: Path, stage: str = "features") -> dict:
    """The cache's meta.json, after checking every array file against the size and SHA-256 it records (`stage`: the rule that made it)."""
    if not (path / "meta.json").exists():
        raise StageError(f"{path} is not a cache made by the {stage} stage (no meta.json)")
    rebuild = f"delete {path} and run the workflow again (or snakemake --forcerun {stage}) to rebuild it"
    meta = read_json(path / "meta.json", rebuild)
    if "files" not in meta:
        raise StageError(f"{path / 'meta.json'} records no sizes or checksums (an older cache): {rebuild}")
    for name, expected in meta["files"].items():
        file = path / name
        if not file.is_file():
            raise StageError(f"{file} is missing: {rebuild}")
        if file.stat().st_size != expected["bytes"]:
            raise StageError(f"{file} has {file.stat().st_size} bytes, not the {expected['bytes']} meta.json records (truncated?): {rebuild}")
        if sha256_of(file) != expected["sha256"]:
            raise StageError(f"{file} does not match the SHA-256 meta.json records (altered or corrupt): {rebuild}")
    return meta


def load_features(path: str | Path, mmap: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    path = Path(path)
    meta = verify_cache(path)
    mode = "r" if mmap else None
    return np.load(path / "features.npy", mmap_mode=mode), np.load(path / "labels.npy"), meta


def load_snr(path: str | Path) -> np.ndarray:
    """The injection SNR of each window of a feature cache (0 for noise and for data without injections).

    Read after :func:`load_features`, which checks every file of the cache."""
    return np.load(Path(path) / "snr.npy")


def _parser(p):
    p.add_argument("--data", required=True, help="dataset split directory")
    p.add_argument("--model", required=True, help="base model directory (for its feature extractor)")
    p.add_argument("--batch-size", type=int, default=64, help="windows per batched log-mel call (features.batch_size)")
    p.add_argument("--out", required=True, help="output feature directory")


def _run(args):
    """Compute Whisper log-mel features of one split, once."""
    meta = extract_split(args.data, args.model, args.out, args.batch_size)
    log.info("wrote %s: %d windows x %d channels x %d mels x %d frames", args.out, meta["n_windows"], len(meta["channels"]), meta["n_mels"], meta["n_frames"])


def main(argv=None) -> int:
    return run_stage("features", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
