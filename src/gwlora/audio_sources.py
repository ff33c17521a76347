"""Single-channel audio sources for the `dataset` stage: a Hugging Face dataset or a folder of WAV files.

Both builders return what :func:`gwlora.dataset.build_split` returns, a
``(datasets.Dataset, record)`` pair that :func:`gwlora.dataset.save_split`
writes and the `features` stage reads:

* columns ``strain`` (float32, ``[1, n_samples]`` at 16 kHz with
  ``n_samples = round(window_seconds * WHISPER_SAMPLE_RATE)``), ``label`` (int64, 0/1 after
  binarisation), ``snr`` (float64, NaN: not applicable to audio), plus
  ``source_id`` (where the clip came from: ``"<source split>:<row>"`` or the
  file's path relative to the folder) and ``source_label`` (the original
  label / class folder name, as a string);
* the record: ``split``, ``seed``, ``source``, ``detectors`` (``["audio"]``,
  the one channel name), ``sample_rate`` (``WHISPER_SAMPLE_RATE``), ``n_windows``, ``n_signal``
  (windows with label 1), ``data_config`` and ``label_names`` (``{0: ..., 1:
  ...}``).

Every clip is converted to mono (mean over channels), resampled to 16 kHz with
:func:`scipy.signal.resample_poly` (exact rational factors from the gcd of the
two rates; both steps are linear, so their order does not matter), then cut to
``window_seconds``: longer clips keep their *start* (the first
``n_samples``), shorter ones are zero-padded at the end. Amplitudes are kept
as decoded (integer PCM scaled to [-1, 1), float WAV as stored); nothing is
peak-normalised.

Which examples land in which split depends only on the source and on its
``shuffle_seed`` (default 0), never on the experiment ``seed`` (which is only
recorded), so every seed of a study sees the same train/val/test data and the
three splits never overlap:

* ``hub``: each of our splits reads one source split; splits that read the same
  source split must be given disjoint ``fractions`` of it, taken after one
  seeded shuffle of that source split;
* ``audiofolder``: the files of each class (sorted, then shuffled) are divided
  by the ``fractions``, per class (stratified).

Audio files are decoded with :mod:`soundfile` (libsndfile), hub ``Audio``
columns included (read undecoded, so ``torchcodec`` is not required).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import zlib
from pathlib import Path, PurePosixPath
from typing import Iterator
from urllib.parse import urlsplit

import datasets
import numpy as np
import soundfile
from scipy.signal import resample_poly

from .cli import StageError, read_json, write_json
from .constants import ARCHIVE_SUFFIXES, SPLITS, URL_SCHEMES, WHISPER_SAMPLE_RATE
from .download import DownloadError, cache_name, download, extract_archive

log = logging.getLogger("gwlora.audio_sources")

CHANNELS = ["audio"]
DEFAULT_FRACTIONS = {"train": [0.0, 0.7], "val": [0.7, 0.85], "test": [0.85, 1.0]}


# --- decoding and conditioning -------------------------------------------------


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
        return x, _sampling_rate(value.get("sampling_rate"), name)
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


def _n_samples(data: dict) -> int:
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


def _finish(rows: list[dict], n_samples: int, data: dict, seed: int, split: str, source: str, label_names: dict) -> tuple[datasets.Dataset, dict]:
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


# --- split arithmetic ----------------------------------------------------------------


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise StageError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")


def _fraction(value, where: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise StageError(f"{where}: expected [start, stop] fractions, got {value!r}") from None
    if not (0.0 <= a < b <= 1.0):
        raise StageError(f"{where}: fractions {value!r} must satisfy 0 <= start < stop <= 1")
    return a, b


def _check_disjoint(ranges: dict[str, tuple[float, float]], where: str, context: str = "") -> None:
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


def _cap_stratified(groups: list[list], n: int, positive: int) -> list[list]:
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


def _limit(data: dict, split: str) -> int:
    try:
        n = int(data["splits"][split])
    except (KeyError, TypeError, ValueError):
        raise StageError(f"data.splits.{split}: missing or not an integer") from None
    if n < 2:
        raise StageError(f"data.splits.{split} is {n}; a split needs at least 2 windows (one per class)")
    return n


# --- source `hub` ------------------------------------------------------------------


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def _load_hub(hub: dict) -> dict[str, datasets.Dataset]:
    ident, config = str(hub["id"]), hub.get("config")
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
    splits = hub.get("splits") or {}
    if split not in splits:
        raise StageError(f"data.hub.splits has no entry for split {split!r} (it names the source split to read)")
    fractions = hub.get("fractions") or {}
    source = str(splits[split])
    sharing = [s for s in SPLITS if s in splits and str(splits[s]) == source]
    ranges = {
        s: _fraction(fractions[s], f"data.hub.fractions.{s}") if s in fractions else (0.0, 1.0) for s in sharing
    }
    _check_disjoint(ranges, "data.hub.fractions", f" both read source split {source!r}")
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
    _check_split(split)
    hub = data.get("hub")
    if not isinstance(hub, dict) or not hub.get("id"):
        raise StageError("data.hub.id is required when data.source is hub")
    n_samples, limit = _n_samples(data), _limit(data, split)
    source, ranges = _hub_ranges(hub, split)
    splits = _load_hub(hub)
    if source not in splits:
        raise StageError(
            f"data.hub.splits.{split}: source split {source!r} not found in {hub['id']!r} "
            f"(available: {', '.join(sorted(splits))})"
        )
    ds = splits[source]
    audio_col, label_col = hub.get("audio_column", "audio"), hub.get("label_column", "label")
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
    order = np.random.default_rng(int(hub.get("shuffle_seed", 0))).permutation(m)
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
                "strain": to_window(x, rate, n_samples),
                "label": int(value in positives),
                "source_id": f"{source}:{index}",
                "source_label": _label_text(value, label_feature),
            }
        )
    if not rows:
        raise StageError(f"split {split!r}: no examples in its share {list(ranges[split])} of source split {source!r}")
    return _finish(rows, n_samples, data, seed, split, "hub", label_names)


# --- source `audiofolder` ----------------------------------------------------------------


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name != "__MACOSX"


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on `directory` itself (no lock file), so parallel split jobs fetch once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _archive_stem(name: str) -> str | None:
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def fetch_archive(url: str, sha256: str | None, cache_dir: str | Path) -> Path:
    """Download the archive at `url` into `cache_dir` and extract it to ``cache_dir/<stem>-<URL hash>``.

    The folder's name is the archive's stem made safe plus a hash of the URL,
    so no URL can name ``..`` or another archive's folder.
    An extraction made earlier from the same URL (and checksum) is reused
    without any request. The archive is deleted after extraction; a refused or
    broken archive leaves nothing behind.
    """
    cache_dir = Path(cache_dir)
    name = PurePosixPath(urlsplit(url).path).name
    stem = _archive_stem(name)
    if stem is None:
        raise StageError(f"data.audiofolder.path {url!r}: not an archive URL (expected a name ending in {', '.join(ARCHIVE_SUFFIXES)})")
    entry = cache_name(url, stem)
    suffix = name[len(stem) :].lower()
    target, marker, archive = cache_dir / entry, cache_dir / f"{entry}.source.json", cache_dir / f"{entry}{suffix}"
    wanted = {"url": url, "sha256": sha256.strip().lower() if sha256 else None}
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir):
        if target.is_dir() and marker.is_file():
            try:
                if read_json(marker) == wanted:
                    log.info("reusing %s (extracted from %s)", target, url)
                    return target
            except (OSError, ValueError):
                pass
        marker.unlink(missing_ok=True)
        try:
            download(url, archive, sha256=wanted["sha256"], progress=False)
            extract_archive(archive, target)
        except DownloadError:
            archive.unlink(missing_ok=True)
            raise
        archive.unlink(missing_ok=True)
        write_json(marker, wanted)
    return target


def _archive_root(target: Path) -> Path:
    """Descend into the single top-level folder an archive often wraps its contents in."""
    entries = [p for p in target.iterdir() if _visible(p)]
    if len(entries) == 1 and entries[0].is_dir() and any(p.is_dir() and _visible(p) for p in entries[0].iterdir()):
        return entries[0]
    return target


def _wav_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() == ".wav" and p.is_file() and all(_visible(Path(part)) for part in p.relative_to(folder).parts)
    )


def list_audiofolder(root: Path) -> dict[str, list[Path]]:
    """{class folder name: its .wav files (recursive), sorted}, for folders holding at least one."""
    if not root.is_dir():
        raise StageError(f"data.audiofolder.path: folder {str(root)!r} not found")
    classes = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and _visible(p)):
        files = _wav_files(folder)
        if files:
            classes[folder.name] = files
    stray = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".wav"]
    if not classes:
        raise StageError(f"data.audiofolder.path: no .wav files in class folders under {str(root)!r}")
    if stray:
        log.warning("%s: ignoring %d .wav files outside the class folders", root, len(stray))
    if len(classes) < 2:
        raise StageError(
            f"data.audiofolder.path: {str(root)!r} has fewer than 2 class folders with .wav files "
            f"(found: {', '.join(classes)})"
        )
    return classes


def build_audiofolder_split(data: dict, seed: int, split: str, cache_dir: str | Path) -> tuple[datasets.Dataset, dict]:
    """One split from a folder of class subfolders of .wav files (local, or an archive at a URL).

    ``data["audiofolder"]``: ``path`` (a folder, or an http(s) URL of a .zip /
    .tar.gz archive, fetched into `cache_dir`), optional ``sha256`` (of the
    archive), ``positive_class`` (the subfolder whose clips are label 1; all
    others are 0), optional ``fractions`` (disjoint [start, stop] per split,
    default 0.7 / 0.15 / 0.15), optional ``shuffle_seed`` (0). Each class's
    files are sorted, shuffled and divided by the fractions (stratified); our
    share is capped at ``data["splits"][split]``, keeping the class proportions.
    """
    _check_split(split)
    cfg = data.get("audiofolder")
    if not isinstance(cfg, dict) or not cfg.get("path"):
        raise StageError("data.audiofolder.path is required when data.source is audiofolder")
    n_samples, limit = _n_samples(data), _limit(data, split)
    fractions = cfg.get("fractions") or DEFAULT_FRACTIONS
    if split not in fractions:
        raise StageError(f"data.audiofolder.fractions has no entry for split {split!r}")
    ranges = {s: _fraction(v, f"data.audiofolder.fractions.{s}") for s, v in fractions.items()}
    _check_disjoint(ranges, "data.audiofolder.fractions")

    path = str(cfg["path"])
    if urlsplit(path).scheme.lower() in URL_SCHEMES:
        root = _archive_root(fetch_archive(path, cfg.get("sha256"), cache_dir))
    else:
        root = Path(path).expanduser()
    classes = list_audiofolder(root)
    positive = cfg.get("positive_class")
    if positive not in classes:
        raise StageError(
            f"data.audiofolder.positive_class {positive!r} is not a class folder of {str(root)!r} "
            f"(classes: {', '.join(classes)})"
        )

    shuffle_seed = int(cfg.get("shuffle_seed", 0))
    groups = []
    for name, files in classes.items():
        order = np.random.default_rng([shuffle_seed, zlib.crc32(name.encode())]).permutation(len(files))
        groups.append([files[i] for i in order[partition(len(files), ranges)[split]]])
    available = sum(len(g) for g in groups)
    if available < limit:
        log.warning("split %r: only %d files in its share of %s, fewer than the %d asked for", split, available, root, limit)
    chosen = [p for g in _cap_stratified(groups, limit, list(classes).index(positive)) for p in g]
    mix = np.random.default_rng([shuffle_seed, SPLITS.index(split)]).permutation(len(chosen))
    rows = []
    for i in mix:
        file = chosen[i]
        x, rate = read_audio_file(file)
        rel = file.relative_to(root)
        rows.append(
            {
                "strain": to_window(x, rate, n_samples),
                "label": int(rel.parts[0] == positive),
                "source_id": rel.as_posix(),
                "source_label": rel.parts[0],
            }
        )
    label_names = {0: "+".join(c for c in classes if c != positive), 1: positive}
    return _finish(rows, n_samples, data, seed, split, "audiofolder", label_names)


def build_audio_split(data: dict, seed: int, split: str, cache_dir: str | Path) -> tuple[datasets.Dataset, dict]:
    """Dispatch on ``data["source"]`` (``hub`` or ``audiofolder``)."""
    source = data.get("source")
    if source == "hub":
        return build_hub_split(data, seed, split)
    if source == "audiofolder":
        return build_audiofolder_split(data, seed, split, cache_dir)
    raise StageError(f"data.source {source!r} is not an audio source (expected hub or audiofolder)")
