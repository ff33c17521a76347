"""Audio clips: decoded from files or bytes with :mod:`soundfile`, then conditioned into one Whisper window.

Every clip is converted to mono (mean over channels), resampled to 16 kHz with
:func:`scipy.signal.resample_poly` (exact rational factors from the gcd of the
two rates; both steps are linear, so their order does not matter), then cut to
``window_seconds``: longer clips keep their *start* (the first
``n_samples``), shorter ones are zero-padded at the end. Amplitudes are kept
as decoded (integer PCM scaled to [-1, 1), float WAV as stored); nothing is
peak-normalised.

A clip is refused, with a :class:`StageError` naming it, rather than turned
into silence or into a window that fails later: an empty file or one with no
samples, a NaN or infinite sample, a sample rate outside
``MIN_SAMPLE_RATE``..``MAX_SAMPLE_RATE`` (a damaged header, most likely), or a
rate whose resampling factors to 16 kHz exceed ``MAX_RESAMPLE_FACTOR``
(:func:`~scipy.signal.resample_poly` designs a filter of about 20 taps per unit
of the larger factor: 999,983 Hz would take seconds and a gigabyte for a
244-byte file).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly

from .cli import StageError
from .constants import WHISPER_SAMPLE_RATE

MIN_SAMPLE_RATE = 1_000  # Hz
MAX_SAMPLE_RATE = 384_000  # Hz: the highest rate of common audio interfaces
MAX_RESAMPLE_FACTOR = 10_000  # the larger of resample_poly's up/down factors (44,056 Hz needs 5,507)


def resample_factors(rate: int, name: str) -> tuple[int, int]:
    """The (up, down) factors from `rate` to 16 kHz; :class:`StageError` naming `name` when they are out of bounds."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise StageError(
            f"{name}: sample rate {rate} Hz is outside the {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz "
            "that audio sources accept (a damaged header?)"
        )
    g = math.gcd(WHISPER_SAMPLE_RATE, rate)
    up, down = WHISPER_SAMPLE_RATE // g, rate // g
    if max(up, down) > MAX_RESAMPLE_FACTOR:
        raise StageError(
            f"{name}: resampling {rate} Hz to {WHISPER_SAMPLE_RATE} Hz needs the factors {up}/{down}, "
            f"beyond the {MAX_RESAMPLE_FACTOR} that audio sources allow; convert the clip to a common rate "
            "(8, 11.025, 16, 22.05, 44.1 or 48 kHz, ...)"
        )
    return up, down


def check_clip(x: np.ndarray, rate: int, name: str) -> tuple[np.ndarray, int]:
    """`(x, rate)` unchanged if the clip has samples, all finite, at a rate :func:`resample_factors` accepts."""
    resample_factors(rate, name)
    if x.shape[-1] == 0:
        raise StageError(f"{name}: the clip has no samples (an empty clip is refused, not read as silence)")
    bad = ~np.isfinite(x)
    if bad.any():
        channel, sample = (int(i) for i in np.argwhere(bad)[0])
        raise StageError(
            f"{name}: {int(bad.sum())} samples are NaN or infinite "
            f"(the first at sample {sample} of channel {channel}, {sample / rate:.3f} s)"
        )
    return x, rate


def decode_audio_bytes(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """Decode an audio file's bytes to (float64 [channels, samples], sample rate) with :mod:`soundfile`.

    libsndfile reads WAV (integer PCM of 8 to 32 bits, 32/64-bit IEEE float,
    WAVE_FORMAT_EXTENSIBLE, ...) and FLAC, OGG and the other formats it knows;
    integer PCM is scaled to [-1, 1), float is kept as stored.
    :class:`StageError` names `name` and libsndfile's reason when it cannot,
    and refuses what :func:`check_clip` refuses.
    """
    if not data:
        raise StageError(f"{name}: empty file (0 bytes), not audio")
    try:
        x, rate = soundfile.read(io.BytesIO(data), dtype="float64", always_2d=True)
    except (RuntimeError, TypeError, ValueError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        reason = getattr(exc, "error_string", None) or str(exc)
        raise StageError(f"{name}: cannot decode audio: {reason}") from None
    return check_clip(np.ascontiguousarray(x.T), int(rate), name)


def read_audio_file(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode an audio file on disk (see :func:`decode_audio_bytes`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StageError(f"{path}: cannot read audio file: {exc}") from exc
    return decode_audio_bytes(data, str(path))


def to_window(x: np.ndarray, rate: int, n_samples: int, name: str = "audio clip") -> np.ndarray:
    """float64 [C, n] at `rate` -> float32 [1, n_samples] at 16 kHz: mono, resampled, start kept or zero-padded."""
    mono = np.asarray(x, dtype=np.float64).mean(axis=0)
    if rate != WHISPER_SAMPLE_RATE and mono.size:
        mono = resample_poly(mono, *resample_factors(rate, name))
    out = np.zeros((1, n_samples), dtype=np.float32)
    keep = min(n_samples, mono.size)
    out[0, :keep] = mono[:keep]
    return out
