"""Gravitational-wave physics of the data set, on the field's own library (LALSuite).

* detector noise PSDs (``lalsimulation.SimNoisePSD*``, Advanced LIGO design by
  default) and Gaussian noise coloured by them;
* binary-black-hole waveforms (``SimInspiralChooseTDWaveform``, IMRPhenomD by
  default), projected onto each detector with its antenna pattern and light
  travel delay (``SimDetectorStrainREAL8TimeSeries``) and added to a segment
  with sub-sample alignment (``SimAddInjectionREAL8TimeSeries``);
* optimal SNR against a PSD, whitening, band-pass and resampling to Whisper's
  16 kHz.

Conventions: one-sided PSDs ``S(f)`` sampled on ``numpy.fft.rfftfreq(n, 1/fs)``;
whitening divides the data's spectrum by ``sqrt(S fs / 2)``, so noise with PSD
``S`` becomes white noise of unit variance; the optimal SNR is
``rho^2 = 4 df sum |h~(f)|^2 / S(f)`` over the analysis band, which equals the
sum of squares of the whitened, band-limited signal (Parseval).
"""

from __future__ import annotations

from functools import lru_cache
from math import gcd

import lal
import lalsimulation as lalsim
import numpy as np
from scipy import signal as sps

from .cli import StageError
from .constants import WHISPER_SAMPLE_RATE



# --------------------------------------------------------------------------- detectors and PSDs


def detector(prefix: str):
    try:
        return lal.cached_detector_by_prefix[prefix]
    except KeyError:
        raise StageError(f"unknown detector {prefix!r} (LAL knows {', '.join(sorted(lal.cached_detector_by_prefix))})") from None


def approximant(name: str) -> int:
    """LAL's id of a time-domain approximant; the error names an unknown one."""
    try:
        value = lalsim.GetApproximantFromString(name)
    except (RuntimeError, ValueError):
        raise StageError(f"unknown waveform approximant {name!r}") from None
    if not lalsim.SimInspiralImplementedTDApproximants(value):
        raise StageError(f"approximant {name!r} has no time-domain implementation in lalsimulation")
    return value


def check_psd_name(name: str) -> None:
    if not callable(getattr(lalsim, f"SimNoisePSD{name}", None)):
        raise StageError(f"unknown PSD {name!r}: lalsimulation has no SimNoisePSD{name}")


@lru_cache(maxsize=16)
def _design_psd(name: str, n: int, fs: float, f_low: float) -> np.ndarray:
    check_psd_name(name)
    df = fs / n
    series = lal.CreateREAL8FrequencySeries("psd", 0, 0.0, df, lal.DimensionlessUnit, n // 2 + 1)
    fill = getattr(lalsim, f"SimNoisePSD{name}")
    try:
        fill(series, f_low)
    except TypeError:  # a scalar model S(f): evaluate it on the grid
        freqs = np.arange(n // 2 + 1) * df
        series.data.data[:] = [fill(f) if f >= f_low else 0.0 for f in freqs]
    psd = np.array(series.data.data, dtype=np.float64)
    return floor_psd(psd, df, f_low)


def design_psd(name: str, n: int, fs: float, f_low: float) -> np.ndarray:
    """A lalsimulation noise PSD on the rfft grid of `n` samples, floored below `f_low`."""
    return _design_psd(name, int(n), float(fs), float(f_low)).copy()


def floor_psd(psd: np.ndarray, df: float, f_low: float) -> np.ndarray:
    """Hold the PSD at its f_low value below f_low (where models are 0 or diverge), so it can be inverted."""
    psd = np.asarray(psd, dtype=np.float64).copy()
    k = int(np.ceil(f_low / df))
    valid = psd[k:][psd[k:] > 0]
    if valid.size == 0:
        raise StageError("PSD is zero everywhere above the low-frequency cut-off")
    psd[:k] = psd[k] if psd[k] > 0 else valid[0]
    psd[psd <= 0] = valid.min()
    return psd


def welch_psd(strain: np.ndarray, fs: float, n: int, f_low: float, seconds: float = 4.0) -> np.ndarray:
    """PSD estimated from the data itself (Welch, median average), interpolated to the rfft grid of `n`."""
    nperseg = min(int(seconds * fs), strain.size)
    freqs, pxx = sps.welch(strain, fs=fs, nperseg=nperseg, noverlap=nperseg // 2, window="hann", average="median")
    grid = np.fft.rfftfreq(n, 1 / fs)
    return floor_psd(np.interp(grid, freqs, pxx), fs / n, f_low)


# --------------------------------------------------------------------------- noise, whitening, SNR


def coloured_noise(rng: np.random.Generator, psd: np.ndarray, n: int, fs: float) -> np.ndarray:
    """Stationary Gaussian noise of one-sided PSD `psd` (on the rfft grid of n samples)."""
    white = rng.standard_normal(n)
    return np.fft.irfft(np.fft.rfft(white) * np.sqrt(psd * fs / 2), n)


def whiten(strain: np.ndarray, psd: np.ndarray, fs: float) -> np.ndarray:
    """Divide the spectrum by the noise amplitude: noise of PSD `psd` becomes unit-variance white noise."""
    n = strain.shape[-1]
    return np.fft.irfft(np.fft.rfft(strain, axis=-1) / np.sqrt(psd * fs / 2), n, axis=-1)


def optimal_snr(h: np.ndarray, psd: np.ndarray, fs: float, band: tuple[float, float]) -> np.ndarray:
    """Optimal matched-filter SNR of signal(s) `h` [..., n] in noise of PSD `psd` ([nf] or one per row), over `band` (Hz)."""
    n = h.shape[-1]
    df = fs / n
    freqs = np.fft.rfftfreq(n, 1 / fs)
    in_band = (freqs >= band[0]) & (freqs <= band[1])
    h_tilde = np.fft.rfft(h, axis=-1) / fs
    return np.sqrt(4 * df * np.sum(np.abs(h_tilde[..., in_band]) ** 2 / psd[..., in_band], axis=-1))


def bandpass(strain: np.ndarray, fs: float, band: tuple[float, float], order: int = 8) -> np.ndarray:
    """Zero-phase Butterworth band-pass."""
    sos = sps.butter(order, band, btype="bandpass", fs=fs, output="sos")
    return sps.sosfiltfilt(sos, strain, axis=-1)


def resample_to_whisper(strain: np.ndarray, fs: int) -> np.ndarray:
    """Polyphase resampling to 16 kHz (anti-aliased)."""
    g = gcd(WHISPER_SAMPLE_RATE, int(fs))
    return sps.resample_poly(strain, WHISPER_SAMPLE_RATE // g, int(fs) // g, axis=-1)


# --------------------------------------------------------------------------- injections


def draw_injection(rng: np.random.Generator, injection: dict, snr_range: dict) -> dict:
    """Random BBH parameters: masses, isotropic sky and orientation, phase, target network SNR."""
    m_lo, m_hi = injection["masses"]["min"], injection["masses"]["max"]
    m1, m2 = sorted(rng.uniform(m_lo, m_hi, size=2), reverse=True)
    return {
        "mass1": float(m1),
        "mass2": float(m2),
        "ra": float(rng.uniform(0, 2 * np.pi)),
        "dec": float(np.arcsin(rng.uniform(-1, 1))),
        "inclination": float(np.arccos(rng.uniform(-1, 1))),
        "polarization": float(rng.uniform(0, np.pi)),
        "coa_phase": float(rng.uniform(0, 2 * np.pi)),
        "merger_position": float(rng.uniform(injection["merger_position"]["min"], injection["merger_position"]["max"])),
        "target_snr": float(rng.uniform(snr_range["min"], snr_range["max"])),
    }


REFERENCE_DISTANCE_MPC = 400.0
# The longest waveform an injection may need, from f_lower to merger: a 1+1 solar-mass binary from 20 Hz
# lasts about 280 s. Far lighter masses or lower f_lower ask lalsimulation for years of samples (and crash it).
MAX_WAVEFORM_SECONDS = 600.0


def check_injection(injection: dict, fs: float) -> None:
    """Raise StageError unless the approximant can make every waveform `injection` draws, at `fs` Hz.

    The lightest binary must chirp from ``f_lower`` to merger within
    :data:`MAX_WAVEFORM_SECONDS`; the heaviest must ring down above ``f_lower``
    (:func:`ringdown_frequency`), or none of its signal is in the band; and the
    corners of the mass range (lightest, most unequal, heaviest) must each be
    generated without a lalsimulation error.
    """
    m_lo, m_hi, f_lower = injection["masses"]["min"], injection["masses"]["max"], injection["f_lower"]
    if f_lower >= fs / 2:
        raise StageError(f"f_lower ({f_lower} Hz) must be below the Nyquist frequency of data.sample_rate ({fs / 2:g} Hz)")
    seconds = lalsim.SimInspiralChirpTimeBound(f_lower, m_lo * lal.MSUN_SI, m_lo * lal.MSUN_SI, 0.0, 0.0)
    if seconds > MAX_WAVEFORM_SECONDS:
        raise StageError(
            f"a {m_lo:g}+{m_lo:g} solar-mass binary (masses.min) lasts about {seconds:.3g} s from f_lower {f_lower:g} Hz, "
            f"more than the {MAX_WAVEFORM_SECONDS:g} s a waveform may take: raise masses.min or f_lower"
        )
    highest = ringdown_frequency(m_hi, m_hi)
    if highest <= f_lower:
        raise StageError(
            f"a {m_hi:g}+{m_hi:g} solar-mass binary (masses.max) rings down at about {highest:.3g} Hz, below f_lower "
            f"{f_lower:g} Hz: none of its signal would reach the band; lower masses.max or f_lower"
        )
    for m1, m2 in sorted({(m_lo, m_lo), (m_hi, m_lo), (m_hi, m_hi)}):
        error = _waveform_error(m1, m2, float(fs), f_lower, injection["approximant"])
        if error:
            raise StageError(
                f"approximant {injection['approximant']} cannot make a {m1:g}+{m2:g} solar-mass waveform from "
                f"f_lower {f_lower:g} Hz at {fs:g} Hz (lalsimulation: {error}); narrow masses or change f_lower"
            )


def ringdown_frequency(m1: float, m2: float) -> float:
    """The frequency (Hz) at which a non-spinning m1+m2 solar-mass binary's remnant rings down: the highest its signal reaches.

    The remnant's fundamental quasi-normal mode from lalsimulation's fits
    (``fSEOBNRv4RD``); it scales as 1/M: about 180 Hz for 50+50 solar masses, 0.009 Hz for 10⁶+10⁶.
    """
    return lalsim.SimInspiralGetFrequency(m1 * lal.MSUN_SI, m2 * lal.MSUN_SI, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, lalsim.fSEOBNRv4RD)


@lru_cache(maxsize=256)
def _waveform_error(m1: float, m2: float, fs: float, f_lower: float, approximant_name: str) -> str | None:
    """lalsimulation's error for a non-spinning m1+m2 waveform from f_lower at fs, or None when it can be made."""
    try:
        lalsim.SimInspiralChooseTDWaveform(
            m1 * lal.MSUN_SI, m2 * lal.MSUN_SI, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
            REFERENCE_DISTANCE_MPC * 1e6 * lal.PC_SI, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0 / fs, f_lower, f_lower, None,
            approximant(approximant_name),
        )
    except RuntimeError as exc:
        return str(exc)
    return None


def project_waveform(
    params: dict, detectors: list[str], fs: float, n: int, segment_gps: float, merger_gps: float,
    approximant_name: str, f_lower: float,
) -> np.ndarray:
    """The BBH signal as seen by each detector, on a segment of `n` samples starting at `segment_gps`.

    Returns [n_detectors, n] strain at the reference distance; the caller rescales to the target SNR.
    """
    hp, hc = lalsim.SimInspiralChooseTDWaveform(
        params["mass1"] * lal.MSUN_SI, params["mass2"] * lal.MSUN_SI,
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        REFERENCE_DISTANCE_MPC * 1e6 * lal.PC_SI, params["inclination"], params["coa_phase"],
        0.0, 0.0, 0.0, 1.0 / fs, f_lower, f_lower, None, approximant(approximant_name),
    )
    # taper the waveform's start so that it does not switch on abruptly
    lalsim.SimInspiralREAL8WaveTaper(hp.data, lalsim.SIM_INSPIRAL_TAPER_START)
    lalsim.SimInspiralREAL8WaveTaper(hc.data, lalsim.SIM_INSPIRAL_TAPER_START)
    hp.epoch += merger_gps
    hc.epoch += merger_gps
    out = np.zeros((len(detectors), n))
    for i, prefix in enumerate(detectors):
        h = lalsim.SimDetectorStrainREAL8TimeSeries(hp, hc, params["ra"], params["dec"], params["polarization"], detector(prefix))
        target = lal.CreateREAL8TimeSeries(prefix, lal.LIGOTimeGPS(segment_gps), 0.0, 1.0 / fs, lal.StrainUnit, n)
        target.data.data[:] = 0.0
        lalsim.SimAddInjectionREAL8TimeSeries(target, h, None)
        out[i] = target.data.data
    # a waveform longer than the segment is cut at its start: taper that edge too
    ramp = min(n // 8, int(0.25 * fs))
    out[:, :ramp] *= 0.5 * (1 - np.cos(np.pi * np.arange(ramp) / ramp))
    return out
