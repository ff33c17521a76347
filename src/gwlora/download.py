"""The one place that fetches files over HTTP(S): resumable, retried, verified downloads.

:func:`download` writes into ``<dest>.part``, resumes it with a ``Range``
request after an interrupted transfer (in this call or an earlier run), retries
transient failures (connection errors, timeouts, HTTP 5xx and 429, truncated
transfers) with exponential backoff within an overall deadline per file (a
server that trickles bytes cannot keep it running for ever), verifies the SHA-256 and an optional
validator, and only then renames the file into place, so ``dest`` is never
partial or corrupted. One download of a file runs at a time: the others (other
threads, other experiments sharing the cache) wait on ``<dest>.lock`` and then
find the verified file.

:func:`read_manifest`, :func:`write_manifest` and :func:`verify_manifest` keep
a JSON record (``{file: {"url", "sha256", "size"}}``) of a download cache, and
:func:`extract_archive` unpacks zip and tar archives after refusing any member
that could write outside the target directory and checking that the archive
reads to its end (:func:`verify_archive`): a transfer without Content-Length
that was cut short looks complete to HTTP, and tar would take it for a
shorter archive.

Only the standard library and ``tqdm`` are used.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import lzma
import os
import re
import stat
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from tqdm import tqdm

from .cli import StageError, atomic_dir, read_json, write_json
from .constants import URL_SCHEMES

log = logging.getLogger("gwlora.download")

USER_AGENT = "gwlora-download/0.1 (+python-urllib)"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE_RE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)


class DownloadError(StageError):
    """A download, verification or extraction failed; the message names the URL and/or file."""


class _Retryable(Exception):
    """An attempt failed in a way worth retrying (the `.part` file is kept for resuming)."""


class _PastDeadline(Exception):
    """The file's deadline passed during an attempt (the `.part` file is kept for resuming)."""


# The longest one file's download may take, all attempts and waits together: a
# multi-GB GWOSC strain file at a few hundred KiB/s (4 GiB at 200 KiB/s is 5.8 h).
DEFAULT_DEADLINE_S = 6 * 3600.0


def _sleep(seconds: float) -> None:  # a seam for tests
    time.sleep(seconds)


def sha256_of(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


def cache_name(url: str, stem: str, suffix: str = "") -> str:
    """A file or folder name for a download cache entry of `url`: `stem` made safe, plus a hash of the URL.

    The name can never be ``.``, ``..``, hidden or contain a path separator,
    whatever the URL's file name was, and two URLs never share a cache entry.
    """
    safe = _UNSAFE_NAME_CHARS.sub("_", stem).strip("._-")[:64] or "download"
    return f"{safe}-{hashlib.sha256(url.encode()).hexdigest()[:12]}{suffix}"


def url_file_name(url: str) -> str:
    """The file name at the end of `url`'s path, refused unless it is a plain name (letters, digits, ``_.-``)."""
    name = PurePosixPath(urllib.parse.urlsplit(url).path).name
    if not name or name.startswith(".") or _UNSAFE_NAME_CHARS.search(name):
        raise DownloadError(f"{url}: cannot name a cached file after this URL (its file name {name!r} is empty, hidden or has unsafe characters)")
    return name


LOCK_POLL_S = 0.1  # how often a download waiting for another one's lock tries again


@contextlib.contextmanager
def _file_lock(dest: Path, url: str, until: float | None, deadline: float | None) -> Iterator[None]:
    """Hold ``<dest>.lock`` exclusively (``fcntl.flock``) while `dest` is checked, downloaded and renamed.

    The holder removes the lock file before releasing it; a waiter that then
    finds its locked file unlinked (or replaced) locks the current one instead,
    so no lock file is left behind and two holders never overlap. Waiting
    counts against the download's deadline (`until`, on the monotonic clock).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    path = dest.with_name(dest.name + ".lock")
    waiting = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waiting:
                        log.info("%s: another download of %s is under way; waiting for it", url, dest)
                        waiting = True
                    if until is not None and time.monotonic() >= until:
                        raise DownloadError(
                            f"{url}: another download of {dest} still held {path.name} when this one's "
                            f"deadline of {deadline:g} s passed"
                        ) from None
                    time.sleep(LOCK_POLL_S)
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                current = False
        except BaseException:
            os.close(fd)
            raise
        if current:
            break
        os.close(fd)  # the previous holder removed this lock file: take the current one
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)  # releases the lock


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def download(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    validate: Callable[[Path], None] | None = None,
    progress: bool = True,
    deadline: float | None = DEFAULT_DEADLINE_S,
) -> Path:
    """Download `url` to `dest` and return `dest`.

    * `dest` already there: returned at once (no request) when `sha256` matches
      (or, without `sha256`, when `validate` accepts it or there is no
      validator); otherwise it is deleted and downloaded again.
    * The transfer goes to ``<dest>.part`` and resumes an existing one with
      ``Range: bytes=<size>-`` (206: append; 200: start over; 416: the part is
      already complete).
    * Up to ``retries + 1`` attempts, sleeping ``backoff * 2**attempt`` seconds
      after each failed one, on connection errors, timeouts, HTTP 5xx/429 and
      truncated transfers; other HTTP 4xx fail at once.
    * `timeout` bounds each connection and each read; `deadline` (seconds, None
      for none) bounds the whole call: attempts, backoff and any wait for
      another download of the file. Past it, :class:`DownloadError` names the
      URL and the deadline, and ``<dest>.part`` is kept for the next run to resume.
    * The finished file must match `sha256` (if given) and pass `validate` (if
      given; it raises to reject the file), else it is deleted and
      :class:`DownloadError` is raised. Only then is it renamed to `dest`.
    * An archive (`dest` named ``.zip``, ``.tar``, ``.tar.gz``, ...) without
      `sha256` is read to its end (:func:`verify_archive`) before it counts as
      downloaded, and downloaded again from scratch (an attempt) if it does not;
      a warning says that it could not be verified by checksum.
    * One download of `dest` at a time (``fcntl.flock`` on ``<dest>.lock``,
      removed afterwards): a second one, in another thread or process, waits
      and then finds the verified file.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in URL_SCHEMES:
        raise DownloadError(f"{url}: unsupported URL scheme {scheme or '(none)'!r} (expected one of {URL_SCHEMES})")
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if not _SHA256_RE.match(sha256):
            raise DownloadError(f"{url}: expected sha256 {sha256!r} is not 64 hexadecimal digits")
    if retries < 0:
        raise DownloadError(f"{url}: retries must be >= 0, got {retries}")
    if deadline is not None and not deadline > 0:
        raise DownloadError(f"{url}: the deadline must be > 0 seconds, got {deadline}")
    started = time.monotonic()
    until = None if deadline is None else started + deadline

    archive = None if sha256 is not None else _archive_kind_of(dest.name)
    # A verified file is used without any lock (it is only ever renamed into place whole).
    with contextlib.suppress(FileNotFoundError):  # another download may be deleting a bad one
        if dest.exists() and _verify(dest, sha256, validate, archive) is None:
            log.debug("%s: already present and verified, not downloading", dest)
            return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    job = _Job(url, dest, part, sha256, validate, archive, retries, backoff, timeout, chunk_size, progress, deadline, until)
    with _file_lock(dest, url, until, deadline):
        return _download_locked(job)


@dataclass(frozen=True)
class _Job:
    """One call of :func:`download`, its arguments checked."""

    url: str
    dest: Path
    part: Path
    sha256: str | None
    validate: Callable[[Path], None] | None
    archive: str | None  # "tar" or "zip": read it to its end (no sha256 to check it by)
    retries: int
    backoff: float
    timeout: float
    chunk_size: int
    progress: bool
    deadline: float | None
    until: float | None  # the deadline on the monotonic clock

    def remaining(self) -> float:
        return float("inf") if self.until is None else self.until - time.monotonic()

    def past_deadline(self, detail: str) -> DownloadError:
        kept = self.part.stat().st_size if self.part.exists() else 0
        tail = f"; {human_size(kept)} kept in {self.part.name} for resuming" if kept else ""
        return DownloadError(
            f"{self.url}: download to {self.dest} did not finish within its deadline of {self.deadline:g} s "
            f"({detail}){tail}"
        )


def _download_locked(job: _Job) -> Path:
    """The body of :func:`download`, run while holding ``<dest>.lock``."""
    url, dest, part, sha256, validate = job.url, job.dest, job.part, job.sha256, job.validate
    if dest.exists():  # checked again: another download may have just finished it
        reason = _verify(dest, sha256, validate, job.archive)
        if reason is None:
            log.debug("%s: already present and verified, not downloading", dest)
            return dest
        log.warning("%s: %s; deleting it and downloading %s again", dest, reason, url)
        dest.unlink()
    if job.archive:
        log.warning(
            "%s: no sha256 given, so the archive %s cannot be verified by checksum; "
            "only checking that it reads to its end", url, dest.name,
        )

    started = time.monotonic()
    attempts = job.retries + 1
    last_error = "no attempt made"
    restarted_after_bad_resume = False
    for attempt in range(attempts):
        if job.remaining() <= 0:
            raise job.past_deadline(f"last error: {last_error}")
        try:
            resumed = _attempt(job)
            if job.archive and (problem := _archive_problem(part, job.archive)):
                part.unlink(missing_ok=True)  # most likely cut short: the next attempt starts afresh
                raise _Retryable(f"the archive does not read to its end: {problem}")
        except _PastDeadline as exc:
            raise job.past_deadline(str(exc)) from None
        except _Retryable as exc:
            last_error = str(exc)
            if attempt + 1 < attempts:
                delay = job.backoff * 2**attempt
                if delay >= job.remaining():
                    raise job.past_deadline(f"last error: {last_error}") from None
                log.warning(
                    "%s: attempt %d/%d failed: %s; retrying in %.2g s", url, attempt + 1, attempts, exc, delay
                )
                _sleep(delay)
            else:
                log.warning("%s: attempt %d/%d failed: %s", url, attempt + 1, attempts, exc)
            continue
        problem = _verify(part, sha256, validate)
        if problem is not None:
            part.unlink(missing_ok=True)
            # Bytes resumed from an earlier transfer may belong to an older version of
            # the file: give it one clean, from-scratch try before blaming the server.
            if resumed and not restarted_after_bad_resume and attempt + 1 < attempts:
                restarted_after_bad_resume = True
                last_error = problem
                log.warning("%s: %s after resuming a partial file; downloading from scratch", url, problem)
                continue
            raise DownloadError(f"{url}: {problem}; deleted the download of {dest.name}")
        os.replace(part, dest)
        size = dest.stat().st_size
        elapsed = time.monotonic() - started
        rate = size / elapsed if elapsed > 0 else float("inf")
        log.info("downloaded %s -> %s (%s in %.1f s, %s/s)", url, dest, human_size(size), elapsed, human_size(rate))
        return dest
    if job.remaining() <= 0:
        raise job.past_deadline(f"last error: {last_error}")
    raise DownloadError(f"{url}: download to {dest} failed after {attempts} attempts; last error: {last_error}")


def _verify(
    part: Path, sha256: str | None, validate: Callable[[Path], None] | None, archive: str | None = None
) -> str | None:
    """Check a finished transfer or an existing file; return what is wrong with it, or None."""
    if archive is not None and (problem := _archive_problem(part, archive)):
        return f"the archive does not read to its end: {problem}"
    if sha256 is not None:
        actual = sha256_of(part)
        if actual != sha256:
            return f"checksum mismatch: expected sha256 {sha256}, got {actual}"
    if validate is not None:
        try:
            validate(part)
        except Exception as exc:  # noqa: BLE001 - any exception from the validator rejects the file
            return f"rejected by the validator: {type(exc).__name__}: {exc}"
    return None


def _attempt(job: _Job) -> bool:
    """One request; leaves a complete `part` or raises. Returns whether it built on earlier bytes.

    Each connection and read waits at most `timeout` and never past the deadline.
    """
    url, part, name, chunk_size = job.url, job.part, job.dest.name, job.chunk_size
    timeout = min(job.timeout, job.remaining())
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    # A fresh opener per call reads the proxy settings from the environment each time.
    opener = urllib.request.build_opener()
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        try:
            return _http_error(url, part, offset, exc)
        finally:
            exc.close()
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets, bad status lines
        raise _Retryable(_describe(exc)) from exc

    with response:
        status = getattr(response, "status", None) or 200
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.strip().isdigit() else None
        total = expected
        mode = "wb"
        if status == 206:
            match = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range") or "")
            if not match:
                part.unlink(missing_ok=True)
                raise _Retryable(f"HTTP 206 with an unusable Content-Range {response.headers.get('Content-Range')!r}")
            start, end, whole = int(match[1]), int(match[2]), match[3]
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retryable(f"asked for bytes from {offset} but the server sent bytes from {start}")
            expected = end - start + 1
            total = int(whole) if whole != "*" else None
            mode = "ab" if offset else "wb"
        else:
            if offset:
                log.info("%s: the server ignored the range request; starting %s over", url, name)
            offset = 0
        received = 0
        try:
            with open(part, mode) as fh, tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=name,
                disable=not job.progress,
                leave=False,
            ) as bar:
                # read1: whatever arrived, so that a trickle of bytes cannot hold one read past the deadline
                while chunk := response.read1(chunk_size):
                    fh.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    if job.remaining() <= 0:
                        raise _PastDeadline(f"stopped after {offset + received} bytes")
        except (OSError, http.client.HTTPException) as exc:  # reset, timeout or IncompleteRead mid-body
            raise _Retryable(f"transfer interrupted after {offset + received} bytes: {_describe(exc)}") from exc
    if expected is not None and received < expected:
        raise _Retryable(f"transfer ended early: got {offset + received} of {offset + expected} bytes")
    if total is not None and part.stat().st_size != total:
        size = part.stat().st_size
        part.unlink(missing_ok=True)
        raise _Retryable(f"partial file has {size} bytes but the server says the file has {total}")
    return offset > 0


def _http_error(url: str, part: Path, offset: int, exc: urllib.error.HTTPError) -> bool:
    status = f"HTTP {exc.code} {exc.reason}".rstrip()
    if exc.code == 416 and offset:
        match = _UNSATISFIED_RANGE_RE.match(exc.headers.get("Content-Range") or "") if exc.headers else None
        if match and int(match[1]) != offset:
            part.unlink(missing_ok=True)  # not the file the server has now
            raise _Retryable(f"{status}: partial file has {offset} bytes, the server's file has {match[1]}")
        log.info("%s: %s for bytes=%d-: the partial file is already complete", url, status, offset)
        return True
    if exc.code == 429 or exc.code >= 500:
        raise _Retryable(status)
    raise DownloadError(f"{url}: {status}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        reason = exc.reason
        return f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else f"URLError: {reason}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# --- manifest ----------------------------------------------------------------


def manifest_entry(path: str | Path, url: str) -> dict:
    """The manifest record of a downloaded file: its URL, SHA-256 and size."""
    path = Path(path)
    return {"url": url, "sha256": sha256_of(path), "size": path.stat().st_size}


def read_manifest(path: str | Path) -> dict[str, dict]:
    """``{relative file name: {"url", "sha256", "size"}}`` from a manifest file; {} if it is missing."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        raise DownloadError(f"manifest {path}: cannot read it: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, dict) for k, v in data.items()):
        raise DownloadError(f"manifest {path}: expected a JSON object mapping file names to objects")
    return data


def write_manifest(path: str | Path, entries: dict[str, dict]) -> None:
    """Write a manifest atomically as sorted, indented JSON."""
    write_json(path, {str(name): dict(entry) for name, entry in entries.items()})


def verify_manifest(directory: str | Path, manifest: dict[str, dict]) -> None:
    """Check that every listed file exists under `directory` with its size and SHA-256.

    Raises :class:`DownloadError` naming every file that is missing or differs.
    """
    directory = Path(directory)
    problems = []
    for name in sorted(manifest):
        entry = manifest[name]
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts:
            problems.append(f"{name}: manifest name escapes {directory}")
            continue
        path = directory / rel
        if not path.is_file():
            problems.append(f"{path}: listed in the manifest but missing")
            continue
        size = path.stat().st_size
        if entry.get("size") is not None and size != int(entry["size"]):
            problems.append(f"{path}: size {size} bytes, the manifest says {entry['size']}")
            continue
        if entry.get("sha256"):
            actual = sha256_of(path)
            if actual != str(entry["sha256"]).lower():
                problems.append(f"{path}: sha256 {actual}, the manifest says {entry['sha256']}")
    if problems:
        raise DownloadError(f"{len(problems)} file(s) do not match the manifest: " + "; ".join(problems))


# --- archives ----------------------------------------------------------------

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")


def _archive_kind_of(name: str) -> str | None:
    """"zip" or "tar" after the file name's suffix, or None."""
    name = name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    return None


def _archive_kind(archive: Path) -> str:
    kind = _archive_kind_of(archive.name)
    if kind:
        return kind
    raise DownloadError(f"{archive}: unknown archive type (expected .zip, {', '.join(_TAR_SUFFIXES)})")


def _check_member_path(archive: Path, name: str, root: Path) -> None:
    rel = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or rel.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise DownloadError(f"{archive}: refusing member {name!r}: absolute path")
    if ".." in rel.parts:
        raise DownloadError(f"{archive}: refusing member {name!r}: '..' would escape the target")
    resolved = (root / rel).resolve()
    if resolved != root and root not in resolved.parents:
        raise DownloadError(f"{archive}: refusing member {name!r}: resolves outside the target")


def _check_tar(archive: Path, tf: tarfile.TarFile, root: Path) -> None:
    for member in tf.getmembers():
        if member.issym() or member.islnk():
            kind = "symlink" if member.issym() else "hard link"
            raise DownloadError(f"{archive}: refusing member {member.name!r}: {kind} to {member.linkname!r}")
        if member.ischr() or member.isblk() or member.isfifo():
            raise DownloadError(f"{archive}: refusing member {member.name!r}: device or FIFO")
        if not (member.isfile() or member.isdir()):
            raise DownloadError(f"{archive}: refusing member {member.name!r}: unsupported member type")
        _check_member_path(archive, member.name, root)


def _tar_end_problem(tf: tarfile.TarFile) -> str | None:
    """After ``getmembers()``: what shows the archive was cut short, or None.

    tarfile takes a missing, short or garbled header after a member for the end
    of the archive; a complete one has its end-of-archive block (zeros) there.
    The compressed stream is then read to its end, which checks its end marker
    and checksum (gzip's CRC and length, bzip2's and xz's own).
    """
    count = len(tf.getmembers())
    tf.fileobj.seek(tf.offset)
    block = tf.fileobj.read(tarfile.BLOCKSIZE)
    if len(block) < tarfile.BLOCKSIZE or block.count(0) != tarfile.BLOCKSIZE:
        return f"no end-of-archive block after its {count} member(s): cut short or corrupt"
    while tf.fileobj.read(1 << 20):
        pass
    return None


# What a truncated or corrupt archive raises while it is read (gzip's bad CRC is an OSError).
_ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError)


def _archive_problem(path: Path, kind: str) -> str | None:
    """Read an archive of `kind` ("tar" or "zip") to its end; what is wrong with it, or None."""
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as zf:  # needs the central directory, at the very end
                bad = zf.testzip()  # every member's CRC
            return f"member {bad!r} fails its CRC check" if bad is not None else None
        with tarfile.open(path, "r:*") as tf:
            return _tar_end_problem(tf)
    except _ARCHIVE_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"


def verify_archive(archive: str | Path) -> None:
    """Check that a .zip or .tar[.gz|.bz2|.xz] archive is whole, by reading it to its end.

    A zip needs its central directory and every member's CRC; a tar needs its
    end-of-archive block after the last member and an intact compressed stream.
    Raises :class:`DownloadError` naming the archive and what is wrong.
    """
    archive = Path(archive)
    kind = _archive_kind(archive)
    problem = _archive_problem(archive, kind)
    if problem:
        raise DownloadError(f"{archive}: the archive does not read to its end: {problem}")


def _check_zip(archive: Path, zf: zipfile.ZipFile, root: Path) -> None:
    for info in zf.infolist():
        mode = info.external_attr >> 16
        if mode and stat.S_ISLNK(mode):
            raise DownloadError(f"{archive}: refusing member {info.filename!r}: symlink")
        if mode and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)):
            raise DownloadError(f"{archive}: refusing member {info.filename!r}: device or FIFO")
        _check_member_path(archive, info.filename, root)


def extract_archive(archive: str | Path, target: str | Path) -> Path:
    """Extract a .zip or .tar[.gz|.bz2|.xz] archive into `target` and return it.

    Every member is checked before anything is written: absolute paths, ``..``
    components, paths resolving outside `target`, links and device files are
    refused with :class:`DownloadError` naming the archive and the member, and
    a tar archive must read to its end (see :func:`verify_archive`; a zip's
    central directory and CRCs are checked as it is read). The archive is
    unpacked into a temporary sibling directory that then replaces `target`,
    so a failure leaves no partial `target`.
    """
    archive, target = Path(archive), Path(target)
    kind = _archive_kind(archive)
    if not archive.is_file():
        raise DownloadError(f"{archive}: archive not found")
    root = target.resolve()
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                _check_zip(archive, zf, root)
                with atomic_dir(target) as tmp:
                    zf.extractall(tmp)
        else:
            with tarfile.open(archive, "r:*") as tf:
                _check_tar(archive, tf, root)
                problem = _tar_end_problem(tf)
                if problem:
                    raise DownloadError(f"{archive}: the archive does not read to its end: {problem}; nothing extracted")
                with atomic_dir(target) as tmp:
                    if hasattr(tarfile, "data_filter"):  # Python >= 3.12, 3.11.4, 3.10.12
                        tf.extractall(tmp, filter="data")
                    else:  # pragma: no cover - members were all checked above
                        tf.extractall(tmp)
    except _ARCHIVE_ERRORS as exc:
        raise DownloadError(f"{archive}: cannot extract: {type(exc).__name__}: {exc}") from exc
    log.info("extracted %s -> %s", archive, target)
    return target
