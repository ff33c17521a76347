"""Audio clips: decoded from files or bytes with :mod:`soundfile`, then conditioned into one Whisper window.

Every clip is converted to mono (mean over channels), resampled to 16 kHz with
:func:`scipy.signal.resample_poly` (exact rational factors from the gcd of the
two rates; both steps are linear, so their order does not matter), then cut to
``window_seconds``: longer clips keep their *start* (the first
``n_samples``), shorter ones are zero-padded at the end. Amplitudes are kept
as decoded (integer PCM scaled to [-1, 1), float WAV as stored); nothing is
peak-normalised.
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


def decode_audio_bytes(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """Decode an audio file's bytes to (float64 [channels, samples], sample rate) with :mod:`soundfile`.

    libsndfile reads WAV (integer PCM of 8 to 32 bits, 32/64-bit IEEE float,
    WAVE_FORMAT_EXTENSIBLE, ...) and FLAC, OGG and the other formats it knows;
    integer PCM is scaled to [-1, 1), float is kept as stored.
    :class:`StageError` names `name` and libsndfile's reason when it cannot.
    """
    try:
        x, rate = soundfile.read(io.BytesIO(data), dtype="float64", always_2d=True)
    except (RuntimeError, TypeError, ValueError) as exc:  # soundfile.LibsndfileError is a RuntimeError
        reason = getattr(exc, "error_string", None) or str(exc)
        raise StageError(f"{name}: cannot decode audio: {reason}") from None
    return np.ascontiguousarray(x.T), int(rate)


def read_audio_file(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode an audio file on disk (see :func:`decode_audio_bytes`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StageError(f"{path}: cannot read audio file: {exc}") from exc
    return decode_audio_bytes(data, str(path))


def to_window(x: np.ndarray, rate: int, n_samples: int) -> np.ndarray:
    """float64 [C, n] at `rate` -> float32 [1, n_samples] at 16 kHz: mono, resampled, start kept or zero-padded."""
    mono = np.asarray(x, dtype=np.float64).mean(axis=0)
    if rate != WHISPER_SAMPLE_RATE and mono.size:
        g = math.gcd(WHISPER_SAMPLE_RATE, rate)
        mono = resample_poly(mono, WHISPER_SAMPLE_RATE // g, rate // g)
    out = np.zeros((1, n_samples), dtype=np.float32)
    keep = min(n_samples, mono.size)
    out[0, :keep] = mono[:keep]
    return out
