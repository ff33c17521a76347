"""One GPU per training job on a multi-GPU machine: CUDA_VISIBLE_DEVICES from a lock per device.

Snakemake's ``gpu`` resource caps how many training jobs run at once
(``snakemake --cores all --resources gpu=4``), but it does not say *which*
device a job should use, and it sets no ``CUDA_VISIBLE_DEVICES``: without help
every job would start on GPU 0. The ``train`` rule therefore starts the
training through this module::

    python -m gwlora.gpus --device auto -- python -m gwlora.train ...

which, before anything initialises CUDA:

* leaves ``CUDA_VISIBLE_DEVICES`` alone when a scheduler has set it (SLURM
  does for ``--gpus``), and does nothing for ``train.device: cpu``, for an
  explicit ``cuda:N`` (the user chose the device) or on a machine without a
  GPU;
* otherwise claims the first free device among the N visible ones by taking
  an exclusive ``flock`` on ``<lock dir>/gpu<i>.lock``, sets
  ``CUDA_VISIBLE_DEVICES=<i>`` and replaces itself with the command
  (``exec``). The locked file stays open in the training process, so the
  device is held exactly as long as that process lives and is freed by the
  kernel when it exits, however it exits (a crash or ``kill -9`` included).
  When every device is held it waits for one.

N is the number of ``GPU`` lines of ``nvidia-smi -L`` (asking PyTorch would
initialise CUDA in this process); ``GWLORA_GPU_COUNT`` overrides it (tests,
or to use fewer devices). The lock directory is ``GWLORA_GPU_LOCK_DIR`` or
``<tmp>/gwlora-gpus-<uid>``; jobs that share a machine must share it.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .cli import StageError, run_stage

log = logging.getLogger("gwlora.gpus")

COUNT_ENV = "GWLORA_GPU_COUNT"
LOCK_DIR_ENV = "GWLORA_GPU_LOCK_DIR"
POLL_SECONDS = 5.0


def visible_device_count(env=os.environ) -> int:
    """Number of GPUs on this machine, without initialising CUDA (0 without a driver)."""
    if env.get(COUNT_ENV, "").strip():
        try:
            count = int(env[COUNT_ENV])
        except ValueError:
            raise StageError(f"{COUNT_ENV}={env[COUNT_ENV]!r}: expected a whole number of GPUs") from None
        if count < 0:
            raise StageError(f"{COUNT_ENV}={count}: expected a whole number of GPUs")
        return count
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        out = subprocess.run([smi, "-L"], check=False, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def requested(device: str) -> int:
    """The `gpu` resource of a training job for `train.device`: 0 for ``cpu``, else 1 (``auto`` and ``cuda[:N]``).

    It depends on the config alone, never on the machine that parses the
    workflow, so a dry run plans the same jobs everywhere; where the job runs,
    :func:`assign` finds the devices (and trains on the CPU when there are none).
    """
    return 0 if device == "cpu" else 1


def default_lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / f"gwlora-gpus-{os.getuid()}")


def try_claim(count: int, lock_dir: str | Path) -> tuple[int, int] | None:
    """Lock the first free device slot: ``(index, open file descriptor holding the lock)``, or None if all are held."""
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        fd = os.open(lock_dir / f"gpu{index}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                continue
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a curious reader
        return index, fd
    return None


def claim(count: int, lock_dir: str | Path, poll_seconds: float = POLL_SECONDS) -> tuple[int, int]:
    """Like :func:`try_claim`, waiting while every device is held."""
    waited = False
    while (slot := try_claim(count, lock_dir)) is None:
        if not waited:
            log.warning("all %d GPUs are held by other training jobs (locks in %s); waiting for one", count, lock_dir)
            waited = True
        time.sleep(poll_seconds)
    return slot


def assign(device: str, env=os.environ, lock_dir: str | Path | None = None) -> int | None:
    """Set ``CUDA_VISIBLE_DEVICES`` in `env` to a device this process now holds; its lock's descriptor, or None."""
    if device == "cpu":
        return None
    if env.get("CUDA_VISIBLE_DEVICES") is not None:
        log.info("using the scheduler's GPU(s): CUDA_VISIBLE_DEVICES=%s", env["CUDA_VISIBLE_DEVICES"])
        return None
    if device.startswith("cuda:"):
        log.info("train.device %s: the device is chosen by the config", device)
        return None
    count = visible_device_count(env)
    if count == 0:
        if device == "cuda":
            log.warning("train.device cuda, but no GPU is visible (nvidia-smi found none)")
        return None
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    index, fd = claim(count, lock_dir)
    env["CUDA_VISIBLE_DEVICES"] = str(index)
    log.info("claimed GPU %d of %d: CUDA_VISIBLE_DEVICES=%d (lock %s)", index, count, index, lock_dir / f"gpu{index}.lock")
    return fd


def _parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="train.device: auto, cpu, cuda or cuda:N")
    p.add_argument("--lock-dir", help=f"directory of the per-device lock files (default: ${LOCK_DIR_ENV} or <tmp>/gwlora-gpus-<uid>)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run on the claimed device")


def _run(args) -> None:
    """Claim a free GPU for a training job, then run it there (see the module's documentation)."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise StageError("no command to run (give it after --)")
    fd = assign(args.device, os.environ, args.lock_dir)
    if fd is not None:
        os.set_inheritable(fd, True)  # the lock lives as long as the command's process
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        raise StageError(f"cannot run {command[0]!r}: {exc.strerror}") from None


def main(argv=None) -> int:
    return run_stage("gpus", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
