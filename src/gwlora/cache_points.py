"""Where a variant's frozen encoder prefix ends, and what caching its outputs costs: the names the workflow plans with.

Kept apart from :mod:`gwlora.encoder_cache` (which computes and reads the
caches, with torch) so that the Snakefile and :mod:`gwlora.resources` can plan
the ``encoder_outputs`` jobs without importing torch.
"""

from __future__ import annotations

import re

from .cli import StageError
from .families import family

CACHED_SPLITS = ("train", "val")  # the test split is scored by the whole model (the best checkpoint, as gwlora-evaluate does)
MAX_CACHE_BYTES = 4 * 2**30  # per split: above it (partial at 30 s context on large splits) the runs train uncached


def cache_setting(train: dict) -> str:
    """train.encoder_cache, a bare YAML ``off`` (read as false) taken as ``off``."""
    return "off" if train["encoder_cache"] is False else train["encoder_cache"]


def cache_point(top_layers: int) -> str:
    """The name of what is cached below `top_layers` trainable layers: ``pooled`` (none train) or ``top<k>-input``."""
    return "pooled" if top_layers == 0 else f"top{top_layers}-input"


def top_layers_of(point: str) -> int:
    """The trainable top layers a cache point serves (the inverse of :func:`cache_point`)."""
    if point == "pooled":
        return 0
    match = re.fullmatch(r"top([1-9][0-9]*)-input", point)
    if match is None:
        raise StageError(f"encoder cache point {point!r}: expected 'pooled' or 'top<k>-input'")
    return int(match.group(1))


def cached_top_layers(train: dict, variant) -> int | None:
    """The trainable top layers of `variant` when it trains on cached encoder outputs (its family decides), else None."""
    if variant is None or cache_setting(train) == "off":
        return None
    return family(variant.family).trainable_top_layers(variant)


def variant_cache_point(train: dict, variant) -> str | None:
    """The cache point `variant` trains above under `train` (the config's train section), or None (no cache)."""
    top = cached_top_layers(train, variant)
    return None if top is None else cache_point(top)


def describe(top_layers: int) -> str:
    return "pooled encoder outputs" if top_layers == 0 else f"hidden states entering the top {top_layers} layer{'s' if top_layers > 1 else ''}"


def cache_bytes(top_layers: int, n_windows: int, n_channels: int, positions: int, d_model: int) -> int:
    """float32 bytes of a split's cache: d_model per channel pooled, positions x d_model per channel below the top layers."""
    return 4 * n_windows * n_channels * d_model * (1 if top_layers == 0 else positions)
