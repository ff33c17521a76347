"""Source `audiofolder`: a folder of class subfolders of .wav files, local or an archive at a URL.

Two layouts (see docs/data.md):

* class folders directly under the root (``chirp/``, ``noise/``, ...): the
  files of each class (sorted, then shuffled with ``shuffle_seed``) are divided
  by the ``fractions``, per class (stratified);
* split folders, the Hugging Face audiofolder convention: ``train/``,
  ``validation/`` and ``test/`` (or their aliases in :data:`SPLIT_FOLDERS`),
  each holding class folders. A split with its own folder reads it whole (no
  re-splitting, so speakers or recordings kept apart by the folders stay
  apart); a split without one is carved out of ``train/``, per class, by the
  ``fractions`` (default: 15 % of ``train/`` for each such split, at its end).

Either way a split is capped at ``data.splits`` keeping the class proportions.
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
# Folder names that hold one split (those of Hugging Face's audiofolder, datasets.data_files.SPLIT_KEYWORDS).
SPLIT_FOLDERS = {
    "train": ("train", "training"),
    "val": ("validation", "valid", "dev", "val"),
    "test": ("test", "testing", "eval", "evaluation"),
}


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
    if (
        len(entries) == 1
        and entries[0].is_dir()
        and not _split_of(entries[0])
        and any(p.is_dir() and _visible(p) for p in entries[0].iterdir())
    ):
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


def _split_of(folder: Path) -> str | None:
    """Our split whose folder name `folder` has (see SPLIT_FOLDERS), or None."""
    return next((split for split, names in SPLIT_FOLDERS.items() if folder.name in names), None)


def split_folders(root: Path) -> dict[str, Path]:
    """{our split: its folder} for the split folders directly under `root` (empty: the class-folder layout)."""
    if not root.is_dir():
        raise StageError(f"data.audiofolder.path: folder {str(root)!r} not found")
    found: dict[str, Path] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and _visible(p)):
        split = _split_of(folder)
        if split is None:
            continue
        if split in found:
            raise StageError(
                f"data.audiofolder.path: {str(root)!r} has two folders for split {split!r}: "
                f"{found[split].name}/ and {folder.name}/"
            )
        found[split] = folder
    if not found:
        return found
    found = {split: found[split] for split in SPLITS if split in found}
    names = ", ".join(f"{p.name}/" for p in found.values())
    others = [p.name for p in sorted(root.iterdir()) if p.is_dir() and _visible(p) and _split_of(p) is None and _wav_files(p)]
    if others:
        raise StageError(
            f"data.audiofolder.path: {str(root)!r} mixes split folders ({names}) with other folders of .wav files "
            f"({', '.join(f'{o}/' for o in others)}); put every class folder inside the split folders, or use none"
        )
    if "train" not in found:
        raise StageError(f"data.audiofolder.path: {str(root)!r} has split folders ({names}) but no train/ folder")
    return found


def _carved(missing: list[str]) -> dict[str, tuple[float, float]]:
    """Default ranges of train/ when splits have no folder: each takes its default share, at the end."""
    width = {s: DEFAULT_FRACTIONS[s][1] - DEFAULT_FRACTIONS[s][0] for s in missing}
    start = round(1.0 - sum(width.values()), 9)
    ranges = {"train": (0.0, start)}
    for s in missing:
        ranges[s] = (start, round(start + width[s], 9))
        start = ranges[s][1]
    return ranges


def _fraction_ranges(fractions: dict, splits: list[str]) -> dict[str, tuple[float, float]]:
    for s in splits:
        if s not in fractions:
            raise StageError(f"data.audiofolder.fractions has no entry for split {s!r}")
    ranges = {s: fraction_range(v, f"data.audiofolder.fractions.{s}") for s, v in fractions.items()}
    check_disjoint(ranges, "data.audiofolder.fractions")
    return ranges


def _plan(root: Path, cfg: dict, split: str) -> tuple[Path, dict[str, tuple[float, float]], dict[Path, dict[str, list[Path]]]]:
    """The folder our split reads, the fraction ranges of the splits dividing it, and the classes of every folder read."""
    folders = split_folders(root)
    fractions = cfg.get("fractions")
    if not folders:
        return root, _fraction_ranges(fractions or DEFAULT_FRACTIONS, [split]), {root: list_audiofolder(root)}
    listings = {folder: list_audiofolder(folder) for folder in folders.values()}
    names = ", ".join(f"{p.name}/" for p in folders.values())
    train = folders["train"].name
    missing = [s for s in SPLITS if s not in folders]
    sharing = ["train", *missing] if missing else []
    if fractions and not missing:
        raise StageError(
            f"data.audiofolder.fractions: {str(root)!r} has the split folders {names}, which fix the splits "
            "(each split reads its folder whole, nothing is re-split); remove data.audiofolder.fractions"
        )
    for s in fractions or {}:
        if s in folders and s not in sharing:
            raise StageError(
                f"data.audiofolder.fractions.{s}: split {s!r} reads the {folders[s].name}/ folder of {str(root)!r} whole; "
                f"give fractions only for the splits that share {train}/ ({', '.join(sharing)})"
            )
    if split not in sharing:
        log.info("%s: split folders %s; split %r reads %s/ whole (no fractions apply to it)", root, names, split, folders[split].name)
        return folders[split], {split: (0.0, 1.0)}, listings
    ranges = _fraction_ranges(fractions, sharing) if fractions else _carved(missing)
    log.info(
        "%s: split folders %s, none for %s: split %r reads its share %s of %s/, per class",
        root, names, ", ".join(missing), split, list(ranges[split]), train,
    )
    return folders["train"], ranges, listings


def build_audiofolder_split(data: dict, seed: int, split: str, cache_dir: str | Path) -> tuple[datasets.Dataset, dict]:
    """One split from a folder of class subfolders of .wav files, or of split folders of them (local, or an archive at a URL).

    ``data["audiofolder"]``: ``path`` (a folder, or an http(s) URL of a .zip /
    .tar.gz archive, fetched into `cache_dir`), optional ``sha256`` (of the
    archive), ``positive_class`` (the subfolder whose clips are label 1; all
    others are 0), optional ``fractions`` (disjoint [start, stop] per split,
    default 0.7 / 0.15 / 0.15; with split folders, only for the splits carved
    out of ``train/``), optional ``shuffle_seed`` (0). Each class's files are
    sorted, shuffled and divided by the fractions (stratified), or read whole
    from the split's own folder; our share is capped at
    ``data["splits"][split]``, keeping the class proportions.
    """
    check_split(split)
    cfg = data["audiofolder"]  # validated: path and positive_class present, defaults filled
    n_samples, limit = window_samples(data), split_limit(data, split)

    path = str(cfg["path"])
    if urlsplit(path).scheme.lower() in URL_SCHEMES:
        root = _archive_root(fetch_archive(path, cfg.get("sha256"), cache_dir))
    else:
        root = Path(path).expanduser()
    folder, ranges, listings = _plan(root, cfg, split)
    classes = listings[folder]
    positive = cfg["positive_class"]
    if positive not in classes:
        raise StageError(
            f"data.audiofolder.positive_class {positive!r} is not a class folder of {str(folder)!r} "
            f"(classes: {', '.join(classes)})"
        )
    every_class = sorted(set().union(*listings.values()))
    if any(list(c) != every_class for c in listings.values()):
        log.warning(
            "%s: the split folders hold different classes (%s)", root,
            "; ".join(f"{f.name}/: {', '.join(c)}" for f, c in listings.items()),
        )

    shuffle_seed = cfg["shuffle_seed"]
    groups = []
    for name, files in classes.items():
        order = np.random.default_rng([shuffle_seed, zlib.crc32(name.encode())]).permutation(len(files))
        groups.append([files[i] for i in order[partition(len(files), ranges)[split]]])
    available = sum(len(g) for g in groups)
    if available < limit:
        log.warning("split %r: only %d files in its share of %s, fewer than the %d asked for", split, available, folder, limit)
    chosen = [p for g in cap_stratified(groups, limit, list(classes).index(positive)) for p in g]
    mix = np.random.default_rng([shuffle_seed, SPLITS.index(split)]).permutation(len(chosen))
    rows = []
    for i in mix:
        file = chosen[i]
        x, rate = read_audio_file(file)
        label = file.relative_to(folder).parts[0]
        rows.append(
            {
                "strain": to_window(x, rate, n_samples, str(file)),
                "label": int(label == positive),
                "source_id": file.relative_to(root).as_posix(),
                "source_label": label,
            }
        )
    label_names = {0: "+".join(c for c in every_class if c != positive), 1: positive}
    return finish_split(rows, n_samples, data, seed, split, "audiofolder", label_names)
