"""gwlora.audio_clips: decoding audio bytes with soundfile, and conditioning a clip into one 16 kHz window."""

from __future__ import annotations

import io
import struct
import time

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


# --- clips that are refused, by name ------------------------------------------------------


def test_empty_file_and_empty_wav_are_refused_not_silence():
    with pytest.raises(StageError, match=r"^gone\.wav: empty file \(0 bytes\)"):
        decode_audio_bytes(b"", "gone.wav")
    header_only = wav_bytes(np.zeros((2, 0)), 8000)
    with pytest.raises(StageError, match=r"^hollow\.wav: the clip has no samples"):
        decode_audio_bytes(header_only, "hollow.wav")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused_with_where_they_are(bad):
    x = tone(8000, 0.1, 2)
    x[1, 400] = bad
    with pytest.raises(StageError, match=r"^nan\.wav: 1 samples are NaN or infinite \(the first at sample 400 of channel 1, 0\.050 s\)"):
        decode_audio_bytes(float_wav_bytes(x, 8000), "nan.wav")


def test_absurd_sample_rate_is_refused_quickly():
    data = wav_bytes(tone(999_983, 0.0001, 1), 999_983)
    assert len(data) == 244
    start = time.perf_counter()
    with pytest.raises(StageError, match=r"^odd\.wav: sample rate 999983 Hz is outside the 1000 to 384000 Hz"):
        decode_audio_bytes(data, "odd.wav")
    assert time.perf_counter() - start < 1.0
    with pytest.raises(StageError, match=r"^slow\.wav: sample rate 999 Hz is outside"):
        decode_audio_bytes(wav_bytes(tone(999, 0.1, 1), 999), "slow.wav")


@pytest.mark.parametrize("rate, ok", [(44_100, True), (44_056, True), (383_999, False), (99_991, False)])
def test_resampling_with_huge_factors_is_refused(rate, ok):
    data = wav_bytes(tone(rate, 0.01, 1), rate)
    if ok:
        assert to_window(*decode_audio_bytes(data, "fine.wav"), 160).shape == (1, 160)
        return
    with pytest.raises(StageError, match=rf"^prime\.wav: resampling {rate} Hz to 16000 Hz needs the factors 16000/{rate}, beyond the 10000"):
        decode_audio_bytes(data, "prime.wav")
    with pytest.raises(StageError, match=r"^clip: resampling"):
        to_window(np.zeros((1, 10)), rate, 160, "clip")
