"""gwlora.audio_splits (split arithmetic shared by the audio sources) and gwlora.audio_sources (the dispatch)."""

from __future__ import annotations

import pytest

from gwlora.audio_sources import build_audio_split
from gwlora.audio_splits import partition
from gwlora.cli import StageError
from gwlora.constants import SPLITS


def test_partition_is_disjoint_proportional_and_reaches_every_split():
    ranges = {"train": (0.0, 0.7), "val": (0.7, 0.85), "test": (0.85, 1.0)}
    parts = partition(100, ranges)
    assert [len(parts[s]) for s in SPLITS] == [70, 15, 15]
    assert sorted(i for r in parts.values() for i in r) == list(range(100))
    assert all(len(r) == 1 for r in partition(3, ranges).values())
    gap = partition(10, {"train": (0.0, 0.5), "test": (0.9, 1.0)})
    assert list(gap["train"]) == [0, 1, 2, 3, 4] and list(gap["test"]) == [9]
