"""What the audio sources share: split arithmetic (fraction ranges, partition, stratified cap) and the built split.

A built split is what :func:`gwlora.dataset.build_split` returns, a
``(datasets.Dataset, record)`` pair (see :mod:`gwlora.audio_sources`).
"""

from __future__ import annotations

import math

import datasets
import numpy as np

from .cli import StageError
from .constants import SPLITS, WHISPER_SAMPLE_RATE

CHANNELS = ["audio"]


# --- split arithmetic ----------------------------------------------------------------


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise StageError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")


def fraction_range(value, where: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise StageError(f"{where}: expected [start, stop] fractions, got {value!r}") from None
    if not (0.0 <= a < b <= 1.0):
        raise StageError(f"{where}: fractions {value!r} must satisfy 0 <= start < stop <= 1")
    return a, b


def check_disjoint(ranges: dict[str, tuple[float, float]], where: str, context: str = "") -> None:
    items = sorted(ranges.items(), key=lambda kv: (kv[1][0], kv[1][1], kv[0]))
    for (s1, (a1, b1)), (s2, (a2, b2)) in zip(items, items[1:]):
        if a2 < b1:
            raise StageError(
                f"{where}: splits {s1!r} [{a1}, {b1}] and {s2!r} [{a2}, {b2}]{context} overlap; "
                "give them disjoint fractions"
            )


def _apportion(n: int, weights: list[float], need_one: list[bool]) -> list[int]:
    """Integer sizes summing to `n`, proportional to `weights` (largest remainder);
    every entry with `need_one` gets at least one when `n` allows it."""
    total = sum(weights)
    ideal = [round(n * w / total, 9) if total > 0 else 0.0 for w in weights]
    sizes = [math.floor(x) for x in ideal]
    order = sorted(range(len(weights)), key=lambda i: (-(ideal[i] - sizes[i]), i))
    for i in order[: max(0, n - sum(sizes))]:
        sizes[i] += 1
    for i in range(len(sizes)):
        if need_one[i] and sizes[i] == 0:
            donors = [j for j in range(len(sizes)) if sizes[j] > (1 if need_one[j] else 0)]
            if donors:
                j = max(donors, key=lambda j: (sizes[j], not need_one[j], -j))
                sizes[j] -= 1
                sizes[i] += 1
    return sizes


def partition(m: int, ranges: dict[str, tuple[float, float]]) -> dict[str, range]:
    """Positions [0, m) of a shuffled list divided between named, disjoint fraction ranges.

    The gaps between ranges stay unused. Sizes follow the fractions (largest
    remainder), and each range gets at least one position when `m` allows, so
    small classes still reach every split.
    """
    segments: list[tuple[str | None, float]] = []
    pos = 0.0
    for name, (a, b) in sorted(ranges.items(), key=lambda kv: kv[1]):
        if a > pos:
            segments.append((None, a - pos))
        segments.append((name, b - a))
        pos = b
    if pos < 1.0:
        segments.append((None, 1.0 - pos))
    sizes = _apportion(m, [w for _, w in segments], [name is not None for name, _ in segments])
    out, start = {}, 0
    for (name, _), size in zip(segments, sizes):
        if name is not None:
            out[name] = range(start, start + size)
        start += size
    return out


def cap_stratified(groups: list[list], n: int, positive: int) -> list[list]:
    """At most `n` items in all, taken from the front of each group in proportion to its size:
    first between the positive group and the others together (both get one when possible),
    then among the others."""
    sizes = [len(g) for g in groups]
    if n >= sum(sizes):
        return groups
    n_pos, n_neg = _apportion(n, [sizes[positive], sum(sizes) - sizes[positive]], [sizes[positive] > 0, sum(sizes) > sizes[positive]])
    others = [i for i in range(len(groups)) if i != positive]
    quotas = dict(zip(others, _apportion(n_neg, [float(sizes[i]) for i in others], [sizes[i] > 0 for i in others])))
    quotas[positive] = n_pos
    return [g[: quotas[i]] for i, g in enumerate(groups)]


def split_limit(data: dict, split: str) -> int:
    try:
        n = int(data["splits"][split])
    except (KeyError, TypeError, ValueError):
        raise StageError(f"data.splits.{split}: missing or not an integer") from None
    if n < 2:
        raise StageError(f"data.splits.{split} is {n}; a split needs at least 2 windows (one per class)")
    return n


# --- the built split -----------------------------------------------------------------


def window_samples(data: dict) -> int:
    n = round(float(data["window_seconds"]) * WHISPER_SAMPLE_RATE)
    if n < 1:
        raise StageError(f"data.window_seconds {data['window_seconds']!r} gives no samples at {WHISPER_SAMPLE_RATE} Hz")
    return n


def _schema(n_samples: int) -> datasets.Features:
    return datasets.Features(
        {
            "strain": datasets.Array2D(shape=(1, n_samples), dtype="float32"),
            "label": datasets.Value("int64"),
            "snr": datasets.Value("float64"),
            "source_id": datasets.Value("string"),
            "source_label": datasets.Value("string"),
        }
    )


def finish_split(rows: list[dict], n_samples: int, data: dict, seed: int, split: str, source: str, label_names: dict) -> tuple[datasets.Dataset, dict]:
    labels = np.array([r["label"] for r in rows], dtype=np.int64)
    n_pos = int(labels.sum())
    if n_pos in (0, len(rows)):
        raise StageError(
            f"split {split!r} has one class only: {len(rows) - n_pos} windows with label 0 "
            f"({label_names[0]}) and {n_pos} with label 1 ({label_names[1]})"
        )
    columns = {
        "strain": [r["strain"] for r in rows],
        "label": labels.tolist(),
        "snr": [float("nan")] * len(rows),
        "source_id": [r["source_id"] for r in rows],
        "source_label": [r["source_label"] for r in rows],
    }
    ds = datasets.Dataset.from_dict(columns, features=_schema(n_samples))
    record = {
        "split": split,
        "seed": seed,
        "source": source,
        "detectors": list(CHANNELS),
        "sample_rate": WHISPER_SAMPLE_RATE,
        "n_windows": len(rows),
        "n_signal": n_pos,
        "data_config": data,
        "label_names": dict(label_names),
    }
    return ds, record
