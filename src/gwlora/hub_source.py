"""Source `hub`: one split of a Hugging Face audio-classification dataset (a hub id or a save_to_disk folder), binarised.

Each of our splits reads one source split; splits that read the same source
split must be given disjoint ``fractions`` of it, taken after one seeded
shuffle (``shuffle_seed``) of that source split. Audio cells are decoded here
(``Audio`` columns are read undecoded, so ``torchcodec`` is not required).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import datasets
import numpy as np

from .audio_clips import check_clip, decode_audio_bytes, read_audio_file, to_window
from .audio_splits import check_disjoint, check_split, finish_split, fraction_range, partition, split_limit, window_samples
from .cli import StageError
from .constants import SPLITS

log = logging.getLogger("gwlora.hub_source")


def _sampling_rate(value, name: str) -> int:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = float("nan")
    if not math.isfinite(rate) or rate <= 0 or rate != int(rate):
        raise StageError(f"{name}: sampling rate {value!r} is not a positive integer")
    return int(rate)


def _decode_value(value, name: str) -> tuple[np.ndarray, int]:
    """An audio cell: {"array", "sampling_rate"}, {"bytes", "path"}, a path, or bytes."""
    if isinstance(value, dict) and value.get("array") is not None:
        x = np.asarray(value["array"], dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        elif x.ndim == 2:
            if x.shape[0] > x.shape[1]:  # [samples, channels]: channels are the short axis
                x = x.T
        else:
            raise StageError(f"{name}: audio array has shape {x.shape}, expected [samples] or [channels, samples]")
        return check_clip(x, _sampling_rate(value.get("sampling_rate"), name), name)
    if isinstance(value, dict) and (value.get("bytes") is not None or value.get("path") is not None):
        if value.get("bytes") is not None:
            label = f"{name} ({value['path']})" if value.get("path") else name
            return decode_audio_bytes(bytes(value["bytes"]), label)
        return read_audio_file(value["path"])
    if isinstance(value, (str, Path)):
        return read_audio_file(value)
    if isinstance(value, (bytes, bytearray)):
        return decode_audio_bytes(bytes(value), name)
    raise StageError(f"{name}: no audio in the cell (got {type(value).__name__})")


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def _load_hub(hub: dict) -> dict[str, datasets.Dataset]:
    ident, config = str(hub["id"]), hub["config"]
    local = Path(ident).expanduser()
    try:
        if _is_saved_dataset(local):
            if config is not None:
                log.warning("data.hub.config %r is ignored for %s (a dataset saved with save_to_disk)", config, local)
            obj = datasets.load_from_disk(str(local))
        else:
            obj = datasets.load_dataset(ident, config)
    except Exception as exc:  # noqa: BLE001 - a missing/unreachable id, a bad config name, ...
        raise StageError(f"data.hub.id {ident!r} (config {config!r}): cannot load it: {type(exc).__name__}: {exc}") from exc
    if isinstance(obj, datasets.Dataset):  # a single saved Dataset is its own "train" split
        return {"train": obj}
    if isinstance(obj, datasets.DatasetDict):
        return dict(obj)
    raise StageError(f"data.hub.id {ident!r}: got a {type(obj).__name__}, expected a dataset with splits")


def _hub_ranges(hub: dict, split: str) -> tuple[str, dict[str, tuple[float, float]]]:
    """Our split's source split, and the fraction ranges of every split that reads it."""
    splits = hub["splits"]  # the schema requires train, val and test
    fractions = hub.get("fractions") or {}  # optional: without it a source split read by one split is read whole
    source = str(splits[split])
    sharing = [s for s in SPLITS if s in splits and str(splits[s]) == source]
    ranges = {
        s: fraction_range(fractions[s], f"data.hub.fractions.{s}") if s in fractions else (0.0, 1.0) for s in sharing
    }
    check_disjoint(ranges, "data.hub.fractions", f" both read source split {source!r}")
    return source, ranges


def _positives(hub: dict, feature, labels: list, label_col: str, source: str) -> tuple[set, dict]:
    """The label values that map to 1, and the label names of 0 and 1."""
    names = feature.names if isinstance(feature, datasets.ClassLabel) else None
    wanted = hub.get("positive_labels")
    if wanted is None:
        seen = sorted({v for v in labels if v is not None}, key=repr)
        if not set(seen) <= {0, 1}:
            raise StageError(
                f"data.hub.label_column {label_col!r} of source split {source!r} is not binary "
                f"(values {seen[:10]}{' ...' if len(seen) > 10 else ''}); set data.hub.positive_labels"
            )
        if names is not None and len(names) == 2:
            return {1}, {0: names[0], 1: names[1]}
        return {1}, {0: "0", 1: "1"}
    if isinstance(wanted, (str, int)):
        wanted = [wanted]
    positives: set = set()
    for p in wanted:
        if names is not None and isinstance(p, str):
            if p not in names:
                raise StageError(f"data.hub.positive_labels: {p!r} is not a class of {label_col!r} (classes: {names})")
            positives.add(names.index(p))
        elif names is not None and not (isinstance(p, int) and 0 <= p < len(names)):
            raise StageError(f"data.hub.positive_labels: {p!r} is not a class index of {label_col!r} (0..{len(names) - 1})")
        else:
            positives.add(p)
    if not any(v in positives for v in labels):
        seen = sorted({v for v in labels if v is not None}, key=repr)
        raise StageError(
            f"data.hub.positive_labels {list(wanted)} match no value of {label_col!r} in source split {source!r} "
            f"(values {seen[:10]}{' ...' if len(seen) > 10 else ''})"
        )
    if names is not None:
        one = "+".join(names[i] for i in sorted(positives))
        zero = "+".join(n for i, n in enumerate(names) if i not in positives) or "other"
    else:
        one, zero = "+".join(str(p) for p in wanted), "other"
    return positives, {0: zero, 1: one}


def _label_text(value, feature) -> str:
    if isinstance(feature, datasets.ClassLabel) and isinstance(value, int) and 0 <= value < feature.num_classes:
        return feature.names[value]
    return str(value)


def build_hub_split(data: dict, seed: int, split: str) -> tuple[datasets.Dataset, dict]:
    """One split from a Hugging Face dataset (hub id or a save_to_disk directory), binarised.

    ``data["hub"]``: ``id``, ``config`` (hub datasets only), ``audio_column``,
    ``label_column``, ``splits`` (our split -> source split), optional
    ``fractions`` (our split -> [start, stop] of the shuffled source split;
    required and disjoint when several of our splits read one source split),
    optional ``shuffle_seed`` (0), optional ``positive_labels`` (values or
    ClassLabel names mapped to 1, all others to 0; without it the label column
    must already be 0/1). ``data["splits"][split]`` caps the number of
    examples: the first ones of our share after the shuffle.
    """
    check_split(split)
    hub = data["hub"]  # validated: id and splits present, defaults filled
    n_samples, limit = window_samples(data), split_limit(data, split)
    source, ranges = _hub_ranges(hub, split)
    splits = _load_hub(hub)
    if source not in splits:
        raise StageError(
            f"data.hub.splits.{split}: source split {source!r} not found in {hub['id']!r} "
            f"(available: {', '.join(sorted(splits))})"
        )
    ds = splits[source]
    audio_col, label_col = hub["audio_column"], hub["label_column"]
    for key, col in (("audio_column", audio_col), ("label_column", label_col)):
        if col not in ds.column_names:
            raise StageError(
                f"data.hub.{key}: column {col!r} not found in source split {source!r} of {hub['id']!r} "
                f"(columns: {', '.join(ds.column_names)})"
            )
    label_feature = ds.features[label_col]
    all_labels = list(ds.select_columns([label_col])[:][label_col])  # plain values (datasets 5 returns a lazy Column)
    positives, label_names = _positives(hub, label_feature, all_labels, label_col, source)

    m = len(ds)
    order = np.random.default_rng(hub["shuffle_seed"]).permutation(m)
    share = order[partition(m, ranges)[split]]
    if len(share) < limit:
        log.warning("split %r: only %d examples in its share of source split %r, fewer than the %d asked for", split, len(share), source, limit)
    indices = [int(i) for i in share[:limit]]

    audio = ds.select_columns([audio_col]).select(indices)
    if isinstance(audio.features[audio_col], datasets.Audio):
        audio = audio.cast_column(audio_col, datasets.Audio(decode=False))  # decoded below, without torchcodec
    rows = []
    for index, cell in zip(indices, audio):
        where = f"{hub['id']} split {source!r} row {index}"
        x, rate = _decode_value(cell[audio_col], where)
        value = all_labels[index]
        rows.append(
            {
                "strain": to_window(x, rate, n_samples, where),
                "label": int(value in positives),
                "source_id": f"{source}:{index}",
                "source_label": _label_text(value, label_feature),
            }
        )
    if not rows:
        raise StageError(f"split {split!r}: no examples in its share {list(ranges[split])} of source split {source!r}")
    return finish_split(rows, n_samples, data, seed, split, "hub", label_names)
