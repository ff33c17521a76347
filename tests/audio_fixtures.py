"""Tiny audio fixtures shared by the tests of the audio sources: tones, noise, WAV bytes, a class folder."""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import datasets
import numpy as np

from gwlora.constants import SPLITS

TONE = 440.0
AMP = 0.5
CLIPS = [(8000, 1, 0.5), (22050, 2, 2.0), (8000, 2, 2.0), (22050, 1, 0.5), (16000, 1, 2.0)]  # (rate, channels, s)


# --- fixture helpers --------------------------------------------------------------------


def tone(rate: int, seconds: float, channels: int, freq: float = TONE, amp: float = AMP) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return np.tile(amp * np.sin(2 * np.pi * freq * t), (channels, 1))


def noise(rate: int, seconds: float, channels: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.3, 0.3, (channels, round(rate * seconds)))


def wav_bytes(x: np.ndarray, rate: int, width: int = 2) -> bytes:
    """[C, n] float in [-1, 1) -> integer PCM WAV bytes via `wave`."""
    x = np.atleast_2d(x)
    if width == 1:
        ints = np.clip(np.round(x * 128 + 128), 0, 255).astype(np.uint8)
        raw = ints.T.tobytes()
    elif width == 3:
        ints = np.clip(np.round(x * 2**23), -(2**23), 2**23 - 1).astype("<i4").T.reshape(-1)
        raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    else:
        dtype = {2: "<i2", 4: "<i4"}[width]
        scale = 2 ** (8 * width - 1)
        raw = np.clip(np.round(x * scale), -scale, scale - 1).astype(dtype).T.tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(x.shape[0])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return buf.getvalue()


def float_wav_bytes(x: np.ndarray, rate: int, extensible: bool = False) -> bytes:
    """[C, n] -> 32-bit IEEE float WAV (format 3, or WAVE_FORMAT_EXTENSIBLE with the float sub-format)."""
    x = np.atleast_2d(x)
    data = x.T.astype("<f4").tobytes()
    c = x.shape[0]
    if extensible:
        guid = struct.pack("<H", 3) + bytes.fromhex("000000001000800000aa00389b71")
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, c, rate, rate * 4 * c, 4 * c, 32, 22, 32, 0) + guid
    else:
        fmt = struct.pack("<HHIIHH", 3, c, rate, rate * 4 * c, 4 * c, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def peak_hz(strain: np.ndarray) -> float:
    x = np.asarray(strain, dtype=np.float64).reshape(-1)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / 16000)[np.argmax(spectrum)])


def make_folder(root: Path, n_chirp: int = 10, n_noise: int = 10, extra: dict[str, int] | None = None) -> Path:
    """root/chirp/*.wav (440 Hz tones, one in a subfolder), root/noise/*.wav, optional other classes."""
    for i in range(n_chirp):
        rate, ch, sec = CLIPS[i % len(CLIPS)]
        sub = root / "chirp" / ("deep" if i == 0 else "")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"c{i:02d}.wav").write_bytes(wav_bytes(tone(rate, sec, ch), rate))
    for name, n in {"noise": n_noise, **(extra or {})}.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rate, ch, sec = CLIPS[i % len(CLIPS)]
            (root / name / f"{name[0]}{i:02d}.wav").write_bytes(wav_bytes(noise(rate, sec, ch, seed=i), rate))
    return root



def cols(ds: datasets.Dataset) -> dict:
    """All columns materialised: numpy arrays, the string columns as lists."""
    c = ds.with_format("numpy")[:]
    return {k: (v.tolist() if k.startswith("source") else v) for k, v in c.items()}


def build_all(builder, data, *args) -> dict:
    return {split: builder(data, 7, split, *args) for split in SPLITS}
