"""gwlora.audio_clips: decoding audio bytes with soundfile, and conditioning a clip into one 16 kHz window."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile

from audio_fixtures import AMP, TONE, float_wav_bytes, peak_hz, tone, wav_bytes
from gwlora.audio_clips import decode_audio_bytes, to_window
from gwlora.cli import StageError


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_integer_pcm_widths_decode_to_the_same_signal(width):
    x = tone(8000, 0.1, 2, amp=0.4)
    y, rate = decode_audio_bytes(wav_bytes(x, 8000, width), "clip.wav")
    assert rate == 8000 and y.shape == x.shape
    assert np.max(np.abs(y - x)) < (1.5 / 2 ** (8 * width - 1) if width > 1 else 0.01)


@pytest.mark.parametrize("extensible", [False, True])
def test_float_wav_decodes(extensible):
    x = tone(22050, 0.1, 2, amp=1.5)  # float WAV may exceed 1: amplitudes are kept
    y, rate = decode_audio_bytes(float_wav_bytes(x, 22050, extensible), "f.wav")
    assert rate == 22050
    np.testing.assert_allclose(y, x.astype(np.float32), rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "fmt, subtype, channels, tol",
    [("WAV", "DOUBLE", 2, 1e-12), ("WAVEX", "PCM_24", 6, 2e-7), ("WAVEX", "DOUBLE", 3, 1e-12), ("FLAC", "PCM_16", 2, 2e-5)],
)
def test_other_layouts_and_formats_decode(fmt, subtype, channels, tol):
    """64-bit float, 6-channel 24-bit WAVE_FORMAT_EXTENSIBLE and FLAC: libsndfile reads them all."""
    x = tone(11025, 0.1, channels, amp=0.4) * np.linspace(1.0, 0.5, channels)[:, None]
    buf = io.BytesIO()
    soundfile.write(buf, x.T, 11025, format=fmt, subtype=subtype)
    y, rate = decode_audio_bytes(buf.getvalue(), f"clip.{fmt.lower()}")
    assert rate == 11025 and y.shape == x.shape
    np.testing.assert_allclose(y, x, rtol=0, atol=tol)


def test_undecodable_audio_names_the_file_and_format():
    with pytest.raises(StageError, match=r"^mystery\.flac: cannot decode audio: .*unimplemented format"):
        decode_audio_bytes(b"fLaC" + bytes(64), "mystery.flac")
    adpcm = bytearray(float_wav_bytes(tone(8000, 0.01, 1), 8000))
    adpcm[20:22] = struct.pack("<H", 2)  # MS ADPCM with 32 bits per sample: nonsense
    with pytest.raises(StageError, match=r"^odd\.wav: cannot decode audio: .*ADPCM"):
        decode_audio_bytes(bytes(adpcm), "odd.wav")


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 16000])
def test_resampling_keeps_the_tone_and_its_amplitude(rate):
    out = to_window(tone(rate, 1.5, 1), rate, 16000)
    assert out.shape == (1, 16000) and out.dtype == np.float32
    assert abs(peak_hz(out) - TONE) <= 1.0
    assert np.max(np.abs(out[0, 1000:-1000])) == pytest.approx(AMP, rel=0.02)


def test_window_crops_the_start_pads_with_zeros_and_averages_channels():
    x = np.stack([np.linspace(-1, 1, 40000), np.linspace(1, 0, 40000)])
    np.testing.assert_allclose(to_window(x, 16000, 16000)[0], x.mean(axis=0)[:16000], atol=1e-6)
    short = to_window(tone(16000, 0.25, 2), 16000, 16000)
    np.testing.assert_allclose(short[0, :4000], tone(16000, 0.25, 1)[0], atol=1e-6)
    assert not short[0, 4000:].any()
