"""Shared plumbing of the stage entry points: logging, errors, atomic outputs.

Every stage module exposes ``main(argv)`` built with :func:`run_stage`:

* the full log (with tracebacks) goes to the file named by ``--log`` (the
  rule's ``log:``), progress and a summary line go to the terminal;
* a failure prints one readable line naming the culprit and exits non-zero,
  the traceback is in the log;
* outputs are written to a temporary sibling and renamed into place, so an
  interrupted or failed stage never leaves a partial output behind.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger("gwlora")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()


class StageError(RuntimeError):
    """An expected failure with a message that names its culprit."""


def setup_logging(log_file: str | Path | None) -> None:
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    console.setLevel(logging.INFO)
    root.addHandler(console)
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, mode="w")
        handler.setFormatter(fmt)
        root.addHandler(handler)
    for noisy in ("matplotlib", "PIL", "fontTools", "urllib3", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_stage(
    name: str,
    build_parser: Callable[[argparse.ArgumentParser], None],
    body: Callable[[argparse.Namespace], None],
    argv: list[str] | None = None,
) -> int:
    parser = argparse.ArgumentParser(prog=f"gwlora-{name}", description=body.__doc__)
    build_parser(parser)
    parser.add_argument("--log", help="write the full log (with tracebacks) to this file")
    args = parser.parse_args(argv)
    setup_logging(args.log)
    try:
        body(args)
    except KeyboardInterrupt:
        log.error("%s: interrupted", name)
        return 130
    except Exception as exc:  # noqa: BLE001 - one readable line, the traceback goes to the log
        logging.getLogger().handlers[0].setLevel(logging.CRITICAL)  # keep the traceback off the terminal
        log.exception("%s failed", name)
        where = f" (traceback in {args.log})" if args.log else ""
        print(f"gwlora-{name}: error: {exc}{where}", file=sys.stderr)
        return 1
    return 0


def json_arg(text: str) -> dict:
    """argparse type: a JSON object given on the command line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def write_json(path: str | Path, obj) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


class CorruptFileError(StageError, ValueError):
    """A file that cannot be parsed; also a ValueError, as json's own error, for callers that treat one as absent."""


def read_json(path: str | Path, rebuild: str = "delete it and run the stage that writes it again"):
    """The JSON value in `path`; a corrupt file (not JSON, not UTF-8) raises CorruptFileError naming it and `rebuild`, how to make it again."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError
        raise CorruptFileError(f"{path} is corrupt, not valid JSON ({exc}): {rebuild}") from None


def _inside_parent(path: str | Path) -> Path:
    """`path`, refused unless it names an entry inside its parent folder (not ``.``, ``..``, ``/`` or a symlink).

    An atomic write replaces its target whole; a target of ``..`` would replace
    (delete) the folder above it.
    """
    path = Path(path)
    if path.name in ("", ".", "..") or path.is_symlink():
        raise StageError(f"refusing to write {str(path)!r}: an output must be a plain entry inside its folder, not {path.name!r} or a link")
    return path


def _temporary_beside(path: Path, make: Callable[..., str]) -> Path:
    """A new temporary file or folder beside `path` (``.<name>.tmp-*``), after removing any a killed writer left there.

    One job writes one output (Snakemake's lock), so a temporary of the same
    target found now is a leftover, never another writer's.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp-"
    for stale in path.parent.glob(f"{glob.escape(prefix)}*"):
        log.info("removing %s, left by an interrupted run", stale)
        shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink(missing_ok=True)
    return Path(make(prefix=prefix, dir=path.parent))


def _closed(fd: int, name: str) -> str:
    os.close(fd)
    return name


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place on success."""
    path = _inside_parent(path)
    tmp = _temporary_beside(path, lambda **kw: _closed(*tempfile.mkstemp(**kw)))
    tmp.chmod(0o666 & ~UMASK)  # mkstemp makes 0600; give the final file the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; it replaces `path` on success."""
    path = _inside_parent(path)
    tmp = _temporary_beside(path, tempfile.mkdtemp)
    tmp.chmod(0o777 & ~UMASK)  # mkdtemp makes 0700
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
