"""What a run cost and what it ran on: wall time, peak memory, checkpoint size, inference latency, hardware, versions, commit."""

from __future__ import annotations

import logging
import os
import platform
import resource
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch

from .families import family
from .variants import Variant
from .methods import disabled
from .precision import Precision, autocast

log = logging.getLogger("gwlora.measure")


def seconds_since(start: float, device: torch.device) -> float:
    """Wall time since `start`, after the device has finished the work queued on it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def peak_memory_bytes(device: torch.device) -> int:
    """The peak of the device's allocated memory (CUDA), else of the process's resident memory."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    # ru_maxrss is KiB on Linux, bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def dir_bytes(path: Path) -> int:
    """The size of every file under `path`."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@torch.no_grad()
def latency_samples(model, x: torch.Tensor, reps: int, precision: Precision, modes: dict | None = None) -> dict[str, np.ndarray]:
    """Every timed forward pass of batch `x` under each mode (a context-manager factory), in milliseconds.

    The modes' passes alternate (A B, then B A, ...) after three untimed
    warm-up rounds, so that a machine's changing load falls on every mode
    alike and their ratio survives a shared machine.
    """
    modes = modes or {"base": nullcontext}
    model.eval()
    times: dict[str, list[float]] = {name: [] for name in modes}
    for i in range(reps + 3):
        for name in list(modes) if i % 2 == 0 else list(reversed(modes)):
            with modes[name]():
                if x.device.type == "cuda":
                    torch.cuda.synchronize(x.device)
                start = time.perf_counter()
                with autocast(precision, x.device):
                    model(x)
                if x.device.type == "cuda":
                    torch.cuda.synchronize(x.device)
            if i >= 3:  # warm-up passes are not timed
                times[name].append(time.perf_counter() - start)
    model.train()
    return {name: 1000 * np.asarray(t) for name, t in times.items()}


def latency_ms(model, x: torch.Tensor, reps: int, precision: Precision, modes: dict | None = None) -> dict[str, float]:
    """Median wall time in milliseconds of one forward pass of batch `x` under each mode (:func:`latency_samples`)."""
    return {name: float(np.median(t)) for name, t in latency_samples(model, x, reps, precision, modes).items()}


def quartiles(samples: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Each mode's repetitions as [25th, 75th percentile] ms: the spread findings' noise rule compares (gwlora.findings.separation)."""
    return {name: [float(q) for q in np.quantile(t, [0.25, 0.75])] for name, t in samples.items()}


def inference_timings(model, variant: Variant, x: torch.Tensor, reps: int, precision: Precision) -> tuple[dict, dict]:
    """(median ms, [q25, q75] ms) per mode: the base model, the method's model unmerged and, where peft can fold it into the weights, merged.

    The base model is the method switched off (peft's ``disable_adapter``, or
    :func:`gwlora.methods.disabled`), timed alternately with the method and, where
    peft can fold it into the weights, the merged model (:func:`latency_samples`,
    :func:`merged_mode`), so that a machine's changing load falls on all three alike. BitFit changes
    biases only, so its "unmerged" model is the base architecture with other
    biases. Full, frozen and partial fine-tuning time the base only. The
    quartiles let a reader's claim ("merged adds no latency") rest on the
    repetitions' spread rather than on one number.
    """
    if reps <= 0:
        return {}, {}
    method = family(variant.family)
    if method.base_architecture:
        samples = latency_samples(model, x, reps, precision)
    elif not method.peft_adapter:
        samples = latency_samples(model, x, reps, precision, {"base": lambda: disabled(model), "unmerged": nullcontext})
    else:
        modes = {"base": model.disable_adapter, "unmerged": nullcontext}
        if (merged := merged_mode(model, variant)) is not None:
            modes["merged"] = merged
        samples = latency_samples(model, x, reps, precision, modes)
    return {name: float(np.median(t)) for name, t in samples.items()}, quartiles(samples)


def merged_mode(model, variant: Variant):
    """A mode of :func:`latency_samples` for the peft model with its adapter merged into the weights (merged before each
    pass, outside its timing, and unmerged after), or None where peft cannot merge it. Merging into the weights, not into
    a copy, leaves the run's peak memory its training's."""
    try:
        with torch.no_grad():
            model.merge_adapter()
            model.unmerge_adapter()
    except (NotImplementedError, ValueError, AttributeError) as exc:  # a method peft cannot merge
        log.info("%s: not merged for latency (%s)", variant.name, exc)
        return None

    @contextmanager
    def merged():
        model.merge_adapter()
        try:
            yield
        finally:
            model.unmerge_adapter()

    return merged


def inference_latency(model, variant: Variant, x: torch.Tensor, reps: int, precision: Precision) -> dict:
    """Median latency per mode (:func:`inference_timings`, without the quartiles)."""
    return inference_timings(model, variant, x, reps, precision)[0]


def versions() -> dict:
    """The versions of Python and of the libraries a run's numbers depend on."""
    import peft
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def hardware(device: torch.device) -> dict:
    """What the run ran on: the processor, its cores, and the GPU when there is one."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    out = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1))
    return out


def git_commit() -> str | None:
    """The workflow checkout's commit (with '+dirty' for local changes), or None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")
