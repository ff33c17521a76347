"""The optimal detector beside the neural methods: a template-bank matched-filter search on the study's windows.

For a known waveform in stationary Gaussian noise the matched filter is the Neyman-Pearson
optimal test; the gravitational-wave field sets every machine-learning search against one
(MLGWSC-1 against PyCBC). This module scores exactly the windows every variant is scored on,
as the data stage stored them (whitened against the simulation's PSD, band-passed, resampled
to 16 kHz), so its AUC and efficiency are the ceiling the neural variants are read against.

* **Templates** are the injections' own approximant (``SimInspiralChooseTDWaveform``), non-spinning
  like the injections, processed as the data stage processes a signal: placed in a segment of the
  data's length, start-tapered, whitened against the same PSD, band-passed with the same filter.
  For a dominant-mode, non-precessing waveform every orientation, polarisation and coalescence
  phase is the template's ``h+`` and its quadrature partner (``h+`` shifted by 90 degrees) mixed
  with some amplitude: two templates per bank point span them.
* **The bank** is placed stochastically (Babak 2008; Harry, Allen & Sathyaprakash 2009) over the
  configured mass range: proposals drawn from the injections' prior are kept when no template
  already matches them to ``minimal_match``; placement stops after ``max_rejections`` proposals
  in a row are covered. The match is the overlap of whitened templates maximised over time and
  phase (:func:`match`).
* **The filter** is exact for the window: a window holds only the part of a template that falls
  inside it, so at every trial merger time the statistic is the generalised likelihood ratio of the
  two-template model fitted to the window, ``y^T G^-1 y`` with ``y`` the correlations of the window
  with the template's two phases and ``G`` their Gram matrix over the window's samples. In white
  unit-variance noise (what whitening makes of the noise) it is chi-squared with 2 degrees of
  freedom at every time, and it equals the in-window optimal SNR squared for a noiseless signal.
* **The network statistic** is the quadrature sum of the detectors' SNRs (coincident, the same
  template), each later detector's time free within its light-travel time from the first,
  maximised over merger time and bank: one score per window.

Written on lalsimulation and numpy FFTs, the libraries the data stage already uses, rather than
pycbc, which would add a second waveform stack with its own pinned numerical dependencies.
Only simulated noise has a PSD known to the filter; GWOSC windows are whitened with a PSD
estimated per stretch that the data stage does not keep, so the family is refused there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import lal
import lalsimulation as lalsim
import numpy as np
from scipy import fft as sfft
from scipy import signal as sps
from scipy import stats
from scipy.ndimage import maximum_filter1d
from tqdm import tqdm

from . import gw
from .constants import WHISPER_SAMPLE_RATE
from .dataset import segment_layout, simulated_psd

log = logging.getLogger("gwlora.matched_filter")

DEFAULT_MINIMAL_MATCH = 0.97
DEFAULT_MAX_REJECTIONS = 200
_CHUNK_BYTES = 512 * 1024**2  # memory the spectra and correlations of one chunk of windows may take


# --------------------------------------------------------------------------- templates


def _waveform_plus(m1: float, m2: float, fs: float, f_lower: float, approximant_name: str) -> tuple[np.ndarray, int]:
    """A face-on, zero-phase h+ at the reference distance, start-tapered, and the sample of its merger (peak)."""
    hp, _ = lalsim.SimInspiralChooseTDWaveform(
        m1 * lal.MSUN_SI, m2 * lal.MSUN_SI, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        gw.REFERENCE_DISTANCE_MPC * 1e6 * lal.PC_SI, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0 / fs, f_lower, f_lower, None,
        gw.approximant(approximant_name),
    )
    lalsim.SimInspiralREAL8WaveTaper(hp.data, lalsim.SIM_INSPIRAL_TAPER_START)
    return np.array(hp.data.data), int(round(-float(hp.epoch) * fs))


def quadrature(x: np.ndarray) -> np.ndarray:
    """`x` shifted by 90 degrees in phase at every frequency (the imaginary part of its analytic signal)."""
    return np.imag(sps.hilbert(x, axis=-1))


@dataclass(frozen=True)
class TemplateSpace:
    """What a template must share with the data: sample rate, segment and window, PSD, band, waveform."""

    fs: int
    n: int  # samples of the segment a template is whitened in
    window: int  # samples of a window at fs
    merger: int  # where a template's merger sits in its segment
    psd: np.ndarray
    band: tuple[float, float]
    f_lower: float
    approximant: str

    @classmethod
    def from_data(cls, data: dict) -> "TemplateSpace":
        if data["source"] != "simulated":
            raise ValueError(f"the matched filter needs the PSD the windows were whitened with: data.source {data['source']!r} "
                             "keeps none (only simulated noise has one known to the filter)")
        layout = segment_layout(data)
        if layout.n < 2 * layout.length:  # the filter reads a template one window either side of its merger
            raise ValueError(f"data.segment_seconds ({data['segment_seconds']}) must be at least twice "
                             f"data.window_seconds ({data['window_seconds']}) for the matched filter")
        return cls(fs=layout.fs, n=layout.n, window=layout.length, merger=layout.n // 2, psd=simulated_psd(data),
                   band=(data["band"]["min"], data["band"]["max"]), f_lower=data["injection"]["f_lower"],
                   approximant=data["injection"]["approximant"])

    def whitened(self, m1: float, m2: float, quadrature_too: bool = True) -> np.ndarray:
        """The template's two phases [2, n] (or h+ alone [1, n]), whitened and band-passed as the data stage treats a signal."""
        h, peak = _waveform_plus(m1, m2, self.fs, self.f_lower, self.approximant)
        segment = np.zeros(self.n)
        first = self.merger - peak  # where the waveform's first sample falls; earlier samples are cut, as in the data
        src = h[max(0, -first) : max(0, -first) + self.n - max(0, first)]
        segment[max(0, first) : max(0, first) + src.size] = src
        if first < 0:  # cut at the segment's start: taper that edge, as the data stage does
            ramp = min(self.n // 8, int(0.25 * self.fs))
            segment[:ramp] *= 0.5 * (1 - np.cos(np.pi * np.arange(ramp) / ramp))
        white = gw.bandpass(gw.whiten(segment, self.psd, self.fs), self.fs, self.band)
        return np.stack([white, quadrature(white)] if quadrature_too else [white])

    @property
    def excerpt(self) -> slice:
        """The samples of a template that can fall inside a window: one window either side of its merger."""
        return slice(self.merger - self.window + 1, self.merger + self.window)

    def band_spectrum(self, m1: float, m2: float) -> np.ndarray:
        """The unit-norm spectrum, in the analysis band, of the part of a template a window can hold (for matches)."""
        part = self.whitened(m1, m2, quadrature_too=False)[0, self.excerpt]
        length = 2 * self.window
        freqs = np.fft.rfftfreq(length, 1 / self.fs)
        spectrum = np.fft.rfft(part, length)[(freqs >= self.band[0]) & (freqs <= self.band[1])]
        return spectrum / np.linalg.norm(spectrum)


def matches(a: np.ndarray, bank_spectra: np.ndarray) -> np.ndarray:
    """Overlaps of one unit-norm band spectrum with each of a bank's [B, F], maximised over time and phase."""
    if len(bank_spectra) == 0:
        return np.zeros(0)
    n = 4 * bank_spectra.shape[-1]  # zero-padded: time steps finer than the band's Nyquist, so the peak is not missed
    return np.abs(np.fft.ifft(a[None] * np.conj(bank_spectra), n, axis=-1)).max(axis=-1) * n


# --------------------------------------------------------------------------- the bank


@dataclass(frozen=True)
class Bank:
    """Template masses [B, 2] (m1 >= m2, solar masses) and how they were placed."""

    masses: np.ndarray
    minimal_match: float
    proposals: int
    seed: int

    def to_dict(self) -> dict:
        return {"masses": self.masses.tolist(), "minimal_match": self.minimal_match,
                "proposals": self.proposals, "seed": self.seed, "size": len(self.masses)}


def draw_masses(rng: np.random.Generator, masses: dict, size: int) -> np.ndarray:
    """Component masses from the injections' prior (uniform in each, sorted m1 >= m2): :func:`gw.draw_injection`'s."""
    pairs = rng.uniform(masses["min"], masses["max"], size=(size, 2))
    return -np.sort(-pairs, axis=1)


def fitting_factors(space: TemplateSpace, bank_spectra: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """For each (m1, m2) of `masses`, its best match against the bank's spectra [B, F]."""
    return np.array([matches(space.band_spectrum(m1, m2), bank_spectra).max() for m1, m2 in masses])


def place_bank(space: TemplateSpace, masses: dict, minimal_match: float = DEFAULT_MINIMAL_MATCH,
               seed: int = 0, max_rejections: int = DEFAULT_MAX_REJECTIONS) -> tuple[Bank, np.ndarray]:
    """A stochastic bank over `masses` ({min, max}) at `minimal_match`; returns it and its templates' band spectra."""
    if not 0 < minimal_match < 1:
        raise ValueError(f"minimal_match {minimal_match} must lie strictly between 0 and 1")
    rng = np.random.default_rng(seed)
    kept: list[tuple[float, float]] = []
    spectra: list[np.ndarray] = []
    stacked = np.zeros((0, 0), dtype=complex)
    rejected = proposals = 0
    with tqdm(desc="place bank", unit="proposal", mininterval=1.0) as bar:
        while rejected < max_rejections:
            (m1, m2), = draw_masses(rng, masses, 1)
            proposals += 1
            s = space.band_spectrum(m1, m2)
            if kept and matches(s, stacked).max() >= minimal_match:
                rejected += 1
            else:
                kept.append((float(m1), float(m2)))
                spectra.append(s)
                stacked = np.stack(spectra)
                rejected = 0
            bar.update()
            bar.set_postfix(templates=len(kept), refresh=False)
    log.info("bank: %d templates from %d proposals (minimal match %.3g)", len(kept), proposals, minimal_match)
    return Bank(np.array(kept), minimal_match, proposals, seed), stacked


# --------------------------------------------------------------------------- filtering


class WindowFilter:
    """A bank ready to filter windows: each template's two phases around its merger, in the frequency domain."""

    def __init__(self, space: TemplateSpace, bank: Bank, detectors: list[str], threads: int = 1):
        self.space = space
        self.bank = bank
        self.threads = threads  # FFT workers (the rule's threads:)
        n_win = space.window
        self.length = sfft.next_fast_len(2 * n_win - 1)  # circular correlation of length >= 2N - 1 holds every lag unwrapped
        templates = np.stack([space.whitened(m1, m2)[:, space.excerpt] for m1, m2 in bank.masses])  # [B, 2, 2N-1]
        # single precision for the correlations (the costly part); the Gram sums below stay in double
        self.spectra = sfft.rfft(templates.astype(np.float32), self.length, axis=-1)  # [B, 2, L//2+1]
        # Gram matrix of the two phases over the window's samples, for every offset (cumulative sums)
        self.gram = np.stack([self._window_sums(templates[:, i] * templates[:, j]) for i, j in ((0, 0), (0, 1), (1, 1))])
        self.shifts = [0] + [self._max_shift(detectors[0], d) for d in detectors[1:]]
        # windows per chunk, so that one chunk's spectra and correlations stay within a budget
        per_window = len(detectors) * len(bank.masses) * 2 * self.length * 16
        self.chunk = max(1, _CHUNK_BYTES // per_window)

    def _window_sums(self, x: np.ndarray) -> np.ndarray:
        """Sums of `x` over the N samples a window holds, merger at window sample t = N-1 ... 0 reversed: [B, N]."""
        n_win = self.space.window
        c = np.concatenate([np.zeros((x.shape[0], 1)), np.cumsum(x, axis=-1)], axis=-1)
        return c[:, n_win : 2 * n_win] - c[:, :n_win]  # sums over x[j : j + N] for j = 0 .. N-1

    def _max_shift(self, first: str, other: str) -> int:
        seconds = lal.LightTravelTime(gw.detector(first), gw.detector(other)) * 1e-9
        return int(np.ceil(seconds * self.space.fs))

    def to_filter_rate(self, windows: np.ndarray) -> np.ndarray:
        """Windows as stored (16 kHz) back at the data's own sample rate, where the templates live."""
        g = np.gcd(WHISPER_SAMPLE_RATE, self.space.fs)
        out = sps.resample_poly(windows, self.space.fs // g, WHISPER_SAMPLE_RATE // g, axis=-1)
        if out.shape[-1] != self.space.window:
            raise ValueError(f"windows of {windows.shape[-1]} samples at 16 kHz are not data.window_seconds at {self.space.fs} Hz")
        return out

    def snr_squared(self, windows: np.ndarray) -> np.ndarray:
        """Phase-maximised SNR^2 of windows [W, C, N] (at the filter rate) for every template and offset: [W, C, B, N].

        Offset ``j`` lays the template's excerpt sample ``j`` on the window's first sample, so its merger falls on
        window sample ``N - 1 - j``; the statistic is ``y^T G^-1 y`` over the window's samples (module docstring).
        """
        n_win = self.space.window
        data = np.conj(sfft.rfft(windows.astype(np.float32), self.length, axis=-1, workers=self.threads))  # [W, C, F]
        corr = sfft.irfft(data[:, :, None, None, :] * self.spectra[None, None], self.length, axis=-1,
                          workers=self.threads)[..., :n_win].astype(np.float64)  # sum_i d[i] e[j + i]
        a, b, c = self.gram
        y0, y1 = corr[..., 0, :], corr[..., 1, :]
        det = a * c - b * b
        usable = det > 1e-12 * a * c  # offsets where the window holds a template (its two phases independent there)
        return np.where(usable, (c * y0**2 - 2 * b * y0 * y1 + a * y1**2) / np.where(usable, det, 1.0), 0.0)

    def network_snr(self, windows16k: np.ndarray) -> np.ndarray:
        """One score per window [W, C, N16k]: the network SNR maximised over merger time and templates."""
        scores = np.empty(len(windows16k))
        for start in tqdm(range(0, len(windows16k), self.chunk), desc="matched filter", unit="chunk", mininterval=1.0):
            chunk = self.to_filter_rate(windows16k[start : start + self.chunk].astype(np.float64))
            rho2 = self.snr_squared(chunk)  # [W, C, B, N]
            total = rho2[:, 0]
            for k, shift in enumerate(self.shifts[1:], start=1):
                total = total + maximum_filter1d(rho2[:, k], size=2 * shift + 1, axis=-1, mode="nearest")
            scores[start : start + len(chunk)] = np.sqrt(total.max(axis=(-2, -1)))
        return scores


# --------------------------------------------------------------------------- the oracle


def trials_from_noise(maxima_squared: np.ndarray, n_detectors: int) -> float:
    """The effective number of independent trials behind noise maxima of a network SNR^2 (maximum likelihood).

    At one merger time the network SNR^2 of noise is chi-squared with 2 degrees of freedom per detector; the
    maximum over ``N`` independent times has CDF ``F^N``, so ``F(max)^N`` is uniform and ``N = -n / sum(log F)``.
    """
    cdf = stats.chi2(2 * n_detectors).cdf(np.asarray(maxima_squared, dtype=float))
    return float(-cdf.size / np.sum(np.log(np.clip(cdf, 1e-300, 1.0))))


def oracle_efficiency(snr: np.ndarray, fpr: float, n_trials: float, n_detectors: int) -> np.ndarray:
    """Detection probability at false-positive rate `fpr` of a search that knows the template exactly.

    Its noise maximum over ``n_trials`` independent times sets the threshold ``t``: ``F(t^2)^N = 1 - fpr``. A
    signal of optimal network SNR ``rho`` is missed only if the true time stays below ``t`` (non-central
    chi-squared, ``2C`` degrees of freedom, non-centrality ``rho^2``) and so do the ``N - 1`` other times.
    """
    if not 0 < fpr < 1:
        raise ValueError(f"fpr {fpr} must lie strictly between 0 and 1")
    dof = 2 * n_detectors
    per_trial = (1 - fpr) ** (1 / n_trials)  # P(one noise trial below t)
    threshold = stats.chi2(dof).ppf(per_trial)
    rho = np.asarray(snr, dtype=float)
    true_time_below = stats.ncx2(dof, np.maximum(rho, 1e-12) ** 2).cdf(threshold)
    return 1 - true_time_below * per_trial ** (n_trials - 1)
