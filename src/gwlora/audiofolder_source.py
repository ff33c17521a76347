"""Source `audiofolder`: a folder of class subfolders of .wav files, local or an archive at a URL.

The files of each class (sorted, then shuffled with ``shuffle_seed``) are
divided by the ``fractions``, per class (stratified).
"""

from __future__ import annotations

import contextlib
import logging
import os
import zlib
from pathlib import Path, PurePosixPath
from typing import Iterator
from urllib.parse import urlsplit

import datasets
import numpy as np

from .audio_clips import read_audio_file, to_window
from .audio_splits import cap_stratified, check_disjoint, check_split, finish_split, fraction_range, partition, split_limit, window_samples
from .cli import StageError, read_json, write_json
from .constants import ARCHIVE_SUFFIXES, SPLITS, URL_SCHEMES
from .download import DownloadError, cache_name, download, extract_archive

log = logging.getLogger("gwlora.audiofolder_source")

DEFAULT_FRACTIONS = {"train": [0.0, 0.7], "val": [0.7, 0.85], "test": [0.85, 1.0]}


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
    check_split(split)
    cfg = data.get("audiofolder")
    if not isinstance(cfg, dict) or not cfg.get("path"):
        raise StageError("data.audiofolder.path is required when data.source is audiofolder")
    n_samples, limit = window_samples(data), split_limit(data, split)
    fractions = cfg.get("fractions") or DEFAULT_FRACTIONS
    if split not in fractions:
        raise StageError(f"data.audiofolder.fractions has no entry for split {split!r}")
    ranges = {s: fraction_range(v, f"data.audiofolder.fractions.{s}") for s, v in fractions.items()}
    check_disjoint(ranges, "data.audiofolder.fractions")

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
    chosen = [p for g in cap_stratified(groups, limit, list(classes).index(positive)) for p in g]
    mix = np.random.default_rng([shuffle_seed, SPLITS.index(split)]).permutation(len(chosen))
    rows = []
    for i in mix:
        file = chosen[i]
        x, rate = read_audio_file(file)
        rel = file.relative_to(root)
        rows.append(
            {
                "strain": to_window(x, rate, n_samples, str(file)),
                "label": int(rel.parts[0] == positive),
                "source_id": rel.as_posix(),
                "source_label": rel.parts[0],
            }
        )
    label_names = {0: "+".join(c for c in classes if c != positive), 1: positive}
    return finish_split(rows, n_samples, data, seed, split, "audiofolder", label_names)
