"""Stage `train`: one (variant, seed) run over the cached features.

The run record, read by `aggregate`, `plot` and `deck`:

* ``curve.csv``, one row per evaluation: ``step``, ``epoch``,
  ``samples_seen``, ``train_time_s`` (cumulative wall time spent training,
  evaluation excluded), ``train_loss`` (mean since the previous evaluation),
  ``val_loss``, ``val_auc``, ``val_accuracy``, ``val_brier``;
* ``summary.json``: the variant, seed, parameter counts, best validation AUC
  and loss, training time in total and to the best checkpoint, test metrics of
  the best checkpoint (AUC, loss, accuracy, TPR at a low FPR), step time,
  samples/s, peak memory, checkpoint size, inference latency at the study's
  eval batch and at batch 1 (the base model; the method unmerged, for every
  method that adds modules or changes weights; merged, where peft can merge
  it), the sequence the encoder layers see (prompt tuning's cost), device,
  precision, ``torch.compile`` (the mode asked for and the one that ran, why it
  fell back to eager, ``compile_time_s``, which ``train_time_s`` excludes),
  versions and git commit; whether the run learned (:func:`learning_problems`);
  and what :mod:`gwlora.evaluate` needs to rebuild the model and score the
  checkpoint again;
* ``predictions.csv``: the best checkpoint's logit for every test window, with
  its label and injection SNR (for AUC against SNR);
* ``best/``: the best checkpoint (lowest val loss): a peft adapter
  (``save_pretrained``, head included) for LoRA and the other peft methods,
  the trained tensors otherwise (bitfit's biases, adapters, prompts, ...),
  and ``checksums.json`` (every file's SHA-256, verified before it is loaded);
* ``tensorboard/``: the same curve as TensorBoard event files;
* ``checkpoint/last.pt`` while running: the state a killed run resumes from,
  a checksum line then a ``torch.save`` payload of tensors and plain
  containers only, loaded with ``weights_only=True`` (a corrupt or foreign
  file is named in the log and the run starts afresh).

Every variant of a seed sees the same batches in the same order: the order
depends on the seed only.

``train.compile`` runs the model's forward (and so its backward) through
``torch.compile``: ``auto`` compiles on CUDA (CUDA graphs, ``reduce-overhead``,
up to :data:`AUTO_GRAPH_MAX_BATCH` windows a step, where the GPU waits on the
host; ``default`` above) and not on the CPU. Compiled graphs keep static
shapes: an epoch's last, smaller batch is *padded* to the batch size with
repeated windows of weight 0 in the loss (so every window still trains once an
epoch and the loss is the mean over the real windows, as in eager mode), and
so is the last evaluation batch (its padding's logits dropped). The graphs are
compiled before the clock starts, by a warm-up step that changes no weight nor
RNG; if compilation fails, the run logs why and trains eagerly. Latency is
measured on the eager model.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from peft.utils import load_peft_weights, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from sklearn.metrics import roc_auc_score, roc_curve
from torch.nn.functional import binary_cross_entropy_with_logits as bce
from tqdm import tqdm

from .base_model import load_record
from .cli import StageError, atomic_dir, atomic_file, json_arg, read_json, run_stage, write_json
from .download import sha256_of
from .config import BASE_ARCHITECTURE, PEFT_FAMILIES, Variant
from .features import load_features, load_snr
from .methods import disabled, sequence_cost
from .families import StepHook, apply_variant, family  # families: the registry
from .model import build_classifier, count_parameters

log = logging.getLogger("gwlora.train")

CURVE_COLUMNS = ("step", "epoch", "samples_seen", "train_time_s", "train_loss", "val_loss", "val_auc", "val_accuracy", "val_brier")
# Keep a split's features on the GPU when smaller than this; otherwise stream pinned batches.
DEVICE_RESIDENT_BYTES = 2 * 1024**3
# train.compile auto on CUDA: CUDA graphs (reduce-overhead) up to this batch, where a step is bound by the host's kernel
# launches (docs/benchmarks.md: the same ~40 ms at batch 8 and 64); torch.compile's default mode above it
AUTO_GRAPH_MAX_BATCH = 128
STATIC_SHAPES = "pad"  # how compiled runs keep one batch shape: the last batch padded (weight 0), none dropped


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StageError(f"train.device {name!r}: CUDA is not available on this machine")
    return device


class SplitOnDevice:
    """A split's features and labels, resident on the device or pinned for fast async copies."""

    def __init__(self, features_dir: str | Path, device: torch.device):
        x, y, self.meta = load_features(features_dir)
        self.snr = load_snr(features_dir)
        self.device = device
        self.n = len(y)
        x_t, y_t = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y).float()
        self.resident = device.type == "cpu" or x_t.numel() * x_t.element_size() <= DEVICE_RESIDENT_BYTES
        if self.resident:
            self.x, self.y = x_t.to(device), y_t.to(device)
        else:
            self.x, self.y = x_t.pin_memory(), y_t.pin_memory()

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.resident:
            idx = idx.to(self.device, non_blocking=True)
            return self.x[idx], self.y[idx]
        return self.x[idx].to(self.device, non_blocking=True), self.y[idx].to(self.device, non_blocking=True)


def autocast_for(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def is_head(name: str) -> bool:
    """Whether a parameter belongs to the freshly initialised head (peft's copy of it included)."""
    return "head" in name.split(".")


def make_optimizer(model, lr: float, weight_decay: float, head_lr_multiplier: float = 1.0) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, one fused kernel for all of them (CPU and CUDA).

    Two parameter groups: the head at ``lr * head_lr_multiplier``, everything
    else that trains (encoder weights, adapters) at ``lr``.
    """
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in trainable if not is_head(n)], "lr": lr, "name": "encoder"},
        {"params": [p for n, p in trainable if is_head(n)], "lr": lr * head_lr_multiplier, "name": "head"},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, weight_decay=weight_decay, fused=True)


def make_schedule(optimizer, schedule: dict, total_steps: int):
    """The learning-rate schedule of every group: linear warm-up, then constant, linear or cosine decay to 0 (transformers')."""
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[schedule["name"]]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps(schedule, total_steps), num_training_steps=total_steps)


def warmup_steps(schedule: dict, total_steps: int) -> int:
    """Warm-up steps: ``warmup_steps`` when set, else ``warmup_fraction`` of the planned steps (at most all of them)."""
    steps = schedule.get("warmup_steps")  # optional: no schema default
    return min(total_steps, round(schedule["warmup_fraction"] * total_steps) if steps is None else steps)


# deck: train-step
def train_step(model, optimizer, loss_fn, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """One optimisation step on (x, y), the loss returned unsynchronised; `weight` marks a padded batch's real windows."""
    optimizer.zero_grad(set_to_none=True)  # first: a compiled forward (CUDA graphs) may reuse the old gradients' memory
    with autocast_for(x.device):
        logits = model(x).float()
        loss = loss_fn(logits, y) if weight is None else (bce(logits, y, reduction="none") * weight).sum() / weight.sum()
    loss.backward()
    optimizer.step()
    return loss.detach()
# deck: end


def padded(idx: torch.Tensor, size: int) -> torch.Tensor:
    """`idx` made `size` long by repeating its own indices (a compiled graph's static batch); the first len(idx) are real."""
    missing = size - len(idx)
    return idx if missing <= 0 else torch.cat([idx, idx.repeat(-(-missing // len(idx)))[:missing]])


def real_windows(n: int, size: int, device: torch.device) -> torch.Tensor:
    """Weights of a padded batch: 1 for its first `n` windows, 0 for the padding (made on the device, no copy)."""
    return (torch.arange(size, device=device) < n).float()


@torch.no_grad()
def evaluate(model, split: SplitOnDevice, batch_size: int, fpr_target: float | None = None, forward=None) -> dict:
    """Loss, AUC, accuracy at logit 0 and Brier score of the model on a split (and TPR at `fpr_target`); ``scores`` holds every window's logit.

    `forward`: the compiled model, whose static shape pads the last batch (its padding's logits are dropped).
    """
    model.eval()
    logits = []
    for start in range(0, split.n, batch_size):
        idx = torch.arange(start, min(start + batch_size, split.n))
        if forward is None:
            x, _ = split.batch(idx)
            with autocast_for(split.device):
                logits.append(model(x).float())
            continue
        x, _ = split.batch(padded(idx, batch_size))
        with autocast_for(split.device):
            logits.append(forward(x)[: len(idx)].float().clone())  # a copy: CUDA graphs reuse their output memory
    model.train()
    logits = torch.cat(logits).cpu()
    labels = split.y.cpu()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels).item()
    y = labels.numpy()
    scores = logits.numpy()
    auc = float(roc_auc_score(y, scores)) if 0 < y.sum() < len(y) else float("nan")
    acc = float(((scores > 0) == (y > 0.5)).mean())
    brier = float(((torch.sigmoid(logits) - labels) ** 2).mean())
    out = {"loss": loss, "auc": auc, "accuracy": acc, "brier": brier, "scores": scores}
    if fpr_target is not None:
        out["tpr_at_fpr"] = tpr_at_fpr(y, scores, fpr_target) if 0 < y.sum() < len(y) else float("nan")
    return out


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    # ru_maxrss is KiB on Linux, bytes on macOS
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def versions() -> dict:
    import peft
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


RUN_STATE = "checkpoint/last.pt"
BEST_DIR = "best"
TRAINABLE_FILE = "trainable.safetensors"


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


CHECKSUMS_FILE = "checksums.json"


def save_best(model, variant: Variant, best_dir: Path) -> None:
    """The best weights so far: a peft adapter (save_pretrained) for peft's methods, else the trained tensors; with every file's SHA-256."""
    with atomic_dir(best_dir) as tmp:
        if variant.family in PEFT_FAMILIES:
            model.save_pretrained(tmp)
        else:
            trainable = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
            save_file(trainable, tmp / TRAINABLE_FILE)
        write_json(tmp / CHECKSUMS_FILE, {p.relative_to(tmp).as_posix(): sha256_of(p) for p in sorted(tmp.rglob("*")) if p.is_file()})


def verify_checkpoint(best_dir: Path) -> None:
    """Check every file of a saved checkpoint against its recorded SHA-256; raise naming the first that differs."""
    listing = best_dir / CHECKSUMS_FILE
    if not listing.is_file():
        raise StageError(f"{listing}: missing, so the checkpoint in {best_dir} cannot be verified; delete the run folder to retrain it")
    for name, digest in read_json(listing).items():
        path = best_dir / name
        if not path.is_file() or sha256_of(path) != digest:
            raise StageError(f"{path}: missing or corrupt (its SHA-256 differs from {CHECKSUMS_FILE}); delete the run folder to retrain it")


def load_best(model, variant: Variant, best_dir: Path) -> None:
    verify_checkpoint(best_dir)
    device = str(next(model.parameters()).device)
    if variant.family in PEFT_FAMILIES:
        family(variant.family).before_loading(model, variant, best_dir)  # families: AdaLoRA's checkpoint holds its ranks then
        set_peft_model_state_dict(model, load_peft_weights(str(best_dir), device=device))
    else:
        model.load_state_dict(load_file(best_dir / TRAINABLE_FILE, device=device), strict=False)


# deck: score-checkpoint
def score_checkpoint(model, variant: Variant, best_dir: Path, split: SplitOnDevice, batch_size: int, fpr_target: float, predictions: Path) -> dict:
    """Load a run's best checkpoint into `model` and score `split`: the one way the test split and every shifted test set are scored.

    Writes every window's logit to `predictions`; returns loss, AUC, accuracy,
    Brier score, TPR at `fpr_target`, and ``one_class`` (whether every window
    got the same side of logit 0). Always eager, never through a compiled
    graph, so that :mod:`gwlora.evaluate` reproduces the test split's numbers
    on any machine with the same device type.
    """
    load_best(model, variant, best_dir)
    metrics = evaluate(model, split, batch_size, fpr_target)
    scores = metrics.pop("scores")
    metrics["one_class"] = bool((scores > 0).all() or (scores <= 0).all())
    write_predictions(split, scores, predictions)
    return metrics
# deck: end


LEARNING_MARGIN = 0.01  # nats: how far below its start (and a constant predictor) the best val loss must fall


def chance_loss(labels: np.ndarray) -> float:
    """The loss of the best constant predictor on `labels`: their binary entropy in nats (ln 2 when balanced)."""
    p = float(np.mean(labels))
    return float(-(p * np.log(p) + (1 - p) * np.log(1 - p))) if 0 < p < 1 else 0.0


def learning_problems(initial_val_loss: float | None, chance_val_loss: float, best_val_loss: float, one_class: bool | None) -> dict[str, str]:
    """Why a run did not learn: {flag: the reason in words}, empty when it did.

    Flagged: ``val_loss_flat``, a best val loss not below both its starting value
    and a constant predictor's by :data:`LEARNING_MARGIN`; ``one_class``, a tested
    checkpoint that puts every test window on one side of logit 0 (its AUC may still read high).
    """
    problems = {}
    reference = chance_val_loss if initial_val_loss is None else min(initial_val_loss, chance_val_loss)
    if not best_val_loss < reference - LEARNING_MARGIN:
        start = "" if initial_val_loss is None else f"its start {initial_val_loss:.4f}, "
        problems["val_loss_flat"] = f"the val loss never fell clearly below {start}a constant predictor's {chance_val_loss:.4f} (best {best_val_loss:.4f})"
    if one_class:
        problems["one_class"] = "the tested checkpoint scores every test window as the same class"
    return problems


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr_target: float) -> float:
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.interp(fpr_target, fpr, tpr))


@torch.no_grad()
def latency_ms(model, x: torch.Tensor, reps: int, modes: dict | None = None) -> dict[str, float]:
    """Median wall time in milliseconds of one forward pass of batch `x` under each mode (a context-manager factory).

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
                with autocast_for(x.device):
                    model(x)
                if x.device.type == "cuda":
                    torch.cuda.synchronize(x.device)
            if i >= 3:  # warm-up passes are not timed
                times[name].append(time.perf_counter() - start)
    model.train()
    return {name: 1000 * float(np.median(t)) for name, t in times.items()}


def inference_latency(model, variant: Variant, x: torch.Tensor, reps: int) -> dict:
    """Latency of the base model, the method's model unmerged and, where peft can fold it into the weights, merged.

    The base model is the method switched off (peft's ``disable_adapter``, or
    :func:`gwlora.methods.disabled`), timed alternately with the method
    (:func:`latency_ms`); the merged model is timed after them. BitFit changes
    biases only, so its "unmerged" model is the base architecture with other
    biases. Full, frozen and partial fine-tuning time the base only.
    """
    if reps <= 0:
        return {}
    if variant.family in BASE_ARCHITECTURE:
        return latency_ms(model, x, reps)
    if variant.family not in PEFT_FAMILIES:
        return latency_ms(model, x, reps, {"base": lambda: disabled(model), "unmerged": nullcontext})
    out = latency_ms(model, x, reps, {"base": model.disable_adapter, "unmerged": nullcontext})
    try:
        model.merge_adapter()
    except (NotImplementedError, ValueError, AttributeError) as exc:  # a method peft cannot merge
        log.info("%s: not merged for latency (%s)", variant.name, exc)
        return out
    try:
        out.update(merged=latency_ms(model, x, reps)["base"])
    finally:
        model.unmerge_adapter()
    return out


def run_fingerprint(variant: Variant, seed: int, model_config: dict, train_config: dict, n_train: int) -> dict:
    """What a saved run state must match to be resumed."""
    keep = {k: v for k, v in train_config.items() if k not in ("threads", "device", "latency_batches", "lr_selection", "compile")}
    return {"variant": variant.to_dict(), "seed": seed, "model": model_config, "train": keep, "n_train": n_train}


@dataclass
class RunState:
    """Everything a resumed run needs besides the model, the optimizer and the RNGs."""

    step: int = 0
    epoch: int = 1  # 1-based; the run is over once it passes train.epochs
    batches_done: int = 0  # of the current epoch
    samples_seen: int = 0
    train_time: float = 0.0  # seconds spent training, evaluations and compilation excluded
    compile_time: float = 0.0  # seconds spent compiling (the warm-up of each start or resume)
    curve: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"val_loss": float("inf")})
    stale: int = 0  # evaluations since the val loss last fell
    stopped: bool = False  # early-stopped
    epoch_order_state: torch.Tensor | None = None  # the data-order generator at this epoch's start
    initial_val_loss: float | None = None  # of the model before its first step (unknown for a state saved without it)

    def advance(self, samples: int, epoch_batches: int, order: torch.Generator) -> None:
        """Count one optimisation step; after an epoch's last batch, move to the next epoch (its data order follows from `order`).

        A state saved at an epoch's end so resumes at the start of the next one.
        """
        self.step, self.batches_done, self.samples_seen = self.step + 1, self.batches_done + 1, self.samples_seen + samples
        if self.batches_done == epoch_batches:
            self.epoch, self.batches_done, self.epoch_order_state = self.epoch + 1, 0, order.get_state()


@dataclass
class Run:
    """The fixed parts of one (variant, seed) run: what trains, on what, and how often it is evaluated."""

    variant: Variant
    seed: int
    out_dir: Path
    model_dir: Path
    model_config: dict
    device: torch.device
    splits: dict[str, SplitOnDevice]
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler | None  # set once the run's length is known
    train_config: dict
    fingerprint: dict
    total_parameters: int
    trainable_parameters: int
    compile_mode: str = "off"  # what runs: off (eager) | default | reduce-overhead
    compiled: object = None  # the compiled forward when compile_mode is not off
    compile_fallback: str | None = None  # why the run trains eagerly although train.compile asked for a mode
    step_hook: StepHook | None = None  # families: the family's call after each optimiser step (AdaLoRA's rank allocation)

    @property
    def forward(self):
        """What training and evaluation call: the compiled model, else the model itself."""
        return self.model if self.compiled is None else self.compiled

    @property
    def label(self) -> str:
        return f"{self.variant.run} seed {self.seed}"

    @property
    def batch_size(self) -> int:
        return self.train_config["batch_size"]

    @property
    def eval_batch_size(self) -> int:
        """Windows per forward pass when scoring a split (no gradients: twice the training batch)."""
        return 2 * self.batch_size

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.splits["train"].n // self.batch_size)

    @property
    def last_step(self) -> int:
        return self.train_config["epochs"] * self.steps_per_epoch

    def evaluates_at(self, step: int) -> bool:
        return step % (self.train_config["eval_every_steps"] or self.steps_per_epoch) == 0 or step == self.last_step


def build_model(model_dir, meta: dict, model_config: dict, variant: Variant, seed: int, device: torch.device) -> tuple[torch.nn.Module, int]:
    """The seeded classifier for features described by `meta` with `variant` applied, on `device`, in training mode.

    Returns it and the parameter count of the model before the variant (peft's wrappers excluded).
    """
    torch.manual_seed(seed)
    base = build_classifier(model_dir, len(meta["channels"]), meta["n_frames"], model_config)
    _, total = count_parameters(base)
    model = apply_variant(base, variant).to(device)
    model.train()
    return model, total


def prepare_run(features, model_dir, model_config: dict, train_config: dict, variant: Variant, seed: int, out_dir) -> Run:
    """Device, features on it, the seeded model with the variant applied, and its optimizer."""
    device = resolve_device(train_config["device"])
    if device.type == "cpu":
        torch.set_num_threads(train_config["threads"])
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)
    splits = {name: SplitOnDevice(path, device) for name, path in features.items()}
    model, total = build_model(model_dir, splits["train"].meta, model_config, variant, seed, device)
    trainable, _ = count_parameters(model)
    run = Run(
        variant=variant, seed=seed, out_dir=Path(out_dir), model_dir=Path(model_dir), model_config=model_config, device=device, splits=splits, model=model,
        optimizer=make_optimizer(model, variant.lr, train_config["weight_decay"], train_config["head_lr_multiplier"]), schedule=None,
        train_config=train_config, fingerprint=run_fingerprint(variant, seed, model_config, train_config, splits["train"].n),
        total_parameters=total, trainable_parameters=trainable,
    )
    run.schedule = make_schedule(run.optimizer, train_config["schedule"], run.last_step)
    run.step_hook = family(variant.family).step_hook(run.model, variant, run.last_step)  # families: step hook
    return run


def compile_mode(setting: str, device: torch.device, batch_size: int) -> str:
    """The torch.compile mode `train.compile` asks for on `device`: auto is off on the CPU, CUDA graphs for small batches on CUDA."""
    if setting != "auto":
        return setting
    if device.type != "cuda":
        return "off"
    return "reduce-overhead" if batch_size <= AUTO_GRAPH_MAX_BATCH else "default"


def compile_model(model: torch.nn.Module, mode: str):
    """The model's forward through torch.compile with static shapes; with CUDA graphs, each call starts a new step."""
    compiled = torch.compile(model, mode=mode, dynamic=False)
    if mode != "reduce-overhead":
        return compiled

    def forward(x: torch.Tensor) -> torch.Tensor:
        torch.compiler.cudagraph_mark_step_begin()  # the previous call's outputs are consumed: their memory may be reused
        return compiled(x)

    return forward


def compile_run(run: Run, state: RunState) -> None:
    """Compile the model per train.compile before the clock starts, adding the time to ``state.compile_time``; on failure, train eagerly.

    The warm-up runs the training graph (forward and backward, batch-sized) and
    the evaluation graph (twice the batch, no gradients) until compiled (three
    times with CUDA graphs, which record on a later call), then drops the
    gradients; no weight, optimizer state or RNG changes.
    """
    mode = compile_mode(run.train_config["compile"], run.device, run.batch_size)
    if mode == "off":
        return
    start = time.perf_counter()
    try:
        forward = compile_model(run.model, mode)
        train, val, loss_fn = run.splits["train"], run.splits["val"], torch.nn.BCEWithLogitsLoss()
        x, y = train.batch(torch.arange(run.batch_size) % train.n)
        x_eval, _ = val.batch(torch.arange(run.eval_batch_size) % val.n)
        with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
            for _ in range(3 if mode == "reduce-overhead" else 1):
                with autocast_for(run.device):
                    loss = loss_fn(forward(x).float(), y)
                loss.backward()
            run.optimizer.zero_grad(set_to_none=True)
            run.model.eval()
            with torch.no_grad(), autocast_for(run.device):
                for _ in range(3 if mode == "reduce-overhead" else 1):
                    forward(x_eval).float().clone()
    except Exception as exc:  # noqa: BLE001 - any compiler failure (no C compiler, an unsupported op, ...) falls back to eager
        run.optimizer.zero_grad(set_to_none=True)
        torch._dynamo.reset()
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'no message'}"
        log.warning("%s: torch.compile (mode %s) failed, training eagerly: %s", run.label, mode, reason)
        run.compile_mode, run.compiled, run.compile_fallback = "off", None, reason
        return
    finally:
        run.model.train()
        state.compile_time += seconds_since(start, run.device)
    run.compile_mode, run.compiled = mode, forward
    log.info("%s: compiled (torch.compile mode %s, static batch %d, last batch padded) in %.1f s", run.label, mode, run.batch_size, time.perf_counter() - start)


def train_run(
    *,
    features: dict[str, str | Path],
    model_dir: str | Path,
    model_config: dict,
    train_config: dict,
    variant: Variant,
    seed: int,
    out_dir: str | Path,
) -> dict:
    """Train one variant with one seed; write curve.csv, summary.json, predictions.csv, best/ and tensorboard/ into `out_dir`.

    The run state is saved at every evaluation; a run that was killed resumes
    from it when started again with the same settings, and ends exactly as an
    uninterrupted run would.
    """
    run = prepare_run(features, model_dir, model_config, train_config, variant, seed, out_dir)
    order = torch.Generator().manual_seed(seed)  # data order: a function of the seed only
    state = resume_or_start(run, order)
    compile_run(run, state)
    if state.step == 0:
        state.initial_val_loss = evaluate(run.model, run.splits["val"], run.eval_batch_size, forward=run.compiled)["loss"]
    log.info("%s: %d trainable of %d parameters on %s, %d steps/epoch", run.label, run.trainable_parameters, run.total_parameters, run.device, run.steps_per_epoch)
    # imported here, so that gwlora.train imports without tensorboard (e.g. on a bare GPU machine)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run.out_dir / "tensorboard"), purge_step=state.step + 1 if state.step else None)
    loss_fn, train, losses = torch.nn.BCEWithLogitsLoss(), run.splits["train"], []
    bar = tqdm(total=run.last_step, initial=state.step, desc=run.label, unit="step", mininterval=2.0)
    segment_start = time.perf_counter()
    while state.epoch <= train_config["epochs"] and not state.stopped:
        order.set_state(state.epoch_order_state)
        batches = torch.randperm(train.n, generator=order).split(run.batch_size)
        for idx in batches[state.batches_done :]:
            if run.compiled is not None and len(idx) < run.batch_size:  # static shapes: pad the epoch's last batch
                x, y = train.batch(padded(idx, run.batch_size))
                losses.append(train_step(run.forward, run.optimizer, loss_fn, x, y, real_windows(len(idx), run.batch_size, run.device)))
            else:
                x, y = train.batch(idx)
                losses.append(train_step(run.forward, run.optimizer, loss_fn, x, y))
            run.schedule.step()
            state.advance(len(idx), len(batches), order)
            if run.step_hook is not None:  # families: step hook, after the step and before the next zero_grad
                run.step_hook.after_step(state.step)
            bar.update()
            if run.evaluates_at(state.step):
                state.train_time += seconds_since(segment_start, run.device)
                evaluate_and_checkpoint(run, state, losses, writer, bar)
                losses.clear()
                if state.stopped:
                    break
                segment_start = time.perf_counter()
    bar.close()
    writer.close()
    summary = summarise(run, state)
    shutil.rmtree(run.out_dir / Path(RUN_STATE).parent, ignore_errors=True)  # finished: the run state is not needed
    return summary


def seconds_since(start: float, device: torch.device) -> float:
    """Wall time since `start`, after the device has finished the work queued on it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def resume_or_start(run: Run, order: torch.Generator) -> RunState:
    """The saved run state when there is a sound one saved with the same settings (model, optimizer and RNGs restored), else a fresh one."""
    fresh = RunState(epoch_order_state=order.get_state())
    path = run.out_dir / RUN_STATE
    if not path.exists():
        return fresh
    try:
        saved = load_run_state(path)
    except StageError as exc:
        log.warning("%s: %s; starting afresh", run.label, exc)
        return fresh
    if saved["fingerprint"] != run.fingerprint:
        log.warning("%s: %s was saved with other settings; starting afresh", run.label, path)
        return fresh
    run.model.load_state_dict(saved["trainable"], strict=False)
    run.optimizer.load_state_dict(saved["optimizer"])
    run.schedule.load_state_dict(saved["schedule"])
    torch.set_rng_state(saved["torch_rng"])
    if run.device.type == "cuda" and saved["cuda_rng"] is not None:
        torch.cuda.set_rng_state(saved["cuda_rng"], run.device)
    if run.step_hook is not None:  # families: step hook
        run.step_hook.load_state_dict(saved["step_hook"])
    state = RunState(**saved["state"])
    log.info("%s: resuming from its saved state at step %d (%.1f s of training)", run.label, state.step, state.train_time)
    return state


def evaluate_and_checkpoint(run: Run, state: RunState, losses: list[torch.Tensor], writer, bar) -> None:
    """Validate, log a curve row, keep the best weights, decide on early stopping, and save the run state."""
    losses_t = torch.stack(losses).float().cpu()
    bad = (~torch.isfinite(losses_t)).nonzero()
    if len(bad):
        bad_step = state.step - len(losses_t) + int(bad[0]) + 1
        raise StageError(f"{run.label}: non-finite training loss at step {bad_step} (lr {run.variant.lr})")
    metrics = evaluate(run.model, run.splits["val"], run.eval_batch_size, forward=run.compiled)
    row = {
        "step": state.step,
        "epoch": state.step / run.steps_per_epoch,
        "samples_seen": state.samples_seen,
        "train_time_s": state.train_time,
        "train_loss": float(losses_t.mean()),
        "val_loss": metrics["loss"],
        "val_auc": metrics["auc"],
        "val_accuracy": metrics["accuracy"],
        "val_brier": metrics["brier"],
    }
    state.curve.append(row)
    for key in ("train_loss", "val_loss", "val_auc"):
        writer.add_scalar(key.replace("_", "/", 1), row[key], state.step)
    writer.add_scalar("time/train_s", row["train_time_s"], state.step)
    bar.set_postfix(val_loss=f"{row['val_loss']:.3f}", val_auc=f"{row['val_auc']:.3f}")
    log.info("%s step %d epoch %.2f: train loss %.4f, val loss %.4f, val AUC %.4f, %.1f s", run.label, state.step, row["epoch"], row["train_loss"], row["val_loss"], row["val_auc"], state.train_time)
    if row["val_loss"] < state.best["val_loss"]:
        state.best, state.stale = dict(row), 0
        save_best(run.model, run.variant, run.out_dir / BEST_DIR)
    else:
        state.stale += 1
        patience = run.train_config["early_stopping_patience"]
        if patience and state.stale >= patience:
            log.info("%s: early stop after %d evaluations without a lower val loss", run.label, state.stale)
            state.stopped = True
    save_run_state(run, state)


def summarise(run: Run, state: RunState) -> dict:
    """Score the best checkpoint on the test split, time inference, and write curve.csv, predictions.csv and summary.json."""
    test = {}
    if "test" in run.splits:
        test = score_checkpoint(run.model, run.variant, run.out_dir / BEST_DIR, run.splits["test"], run.eval_batch_size,
                                run.train_config["tpr_at_fpr"], run.out_dir / "predictions.csv")
    else:
        load_best(run.model, run.variant, run.out_dir / BEST_DIR)
    val = run.splits["val"]
    chance = chance_loss(val.y.cpu().numpy())
    problems = learning_problems(state.initial_val_loss, chance, state.best["val_loss"], test.get("one_class"))
    for problem in problems.values():
        log.warning("%s did not learn: %s", run.label, problem)
    x_latency, _ = val.batch(torch.arange(min(run.eval_batch_size, val.n)))
    latency = inference_latency(run.model, run.variant, x_latency, run.train_config["latency_batches"])
    latency_1 = inference_latency(run.model, run.variant, x_latency[:1], run.train_config["latency_batches"])
    classifier = run.model.get_base_model() if hasattr(run.model, "get_base_model") else run.model
    curve, best = state.curve, state.best
    summary = {
        "variant": run.variant.name,
        "run": run.variant.run,
        "family": run.variant.family,
        "config_key": run.variant.config_key,
        "variant_config": run.variant.to_dict(),
        "seed": run.seed,
        "trainable_parameters": run.trainable_parameters,
        "total_parameters": run.total_parameters,
        "trainable_percent": 100.0 * run.trainable_parameters / run.total_parameters,
        # quality, all of one checkpoint: the lowest val loss, the one the test split scores (the curve has every evaluation)
        "best_val_loss": best["val_loss"],
        "val_auc": best["val_auc"],
        "best_step": best["step"],
        "test_auc": test.get("auc"),
        "test_loss": test.get("loss"),
        "test_accuracy": test.get("accuracy"),
        "test_tpr_at_fpr": test.get("tpr_at_fpr"),
        "test_brier": test.get("brier"),
        "test_one_class": test.get("one_class"),
        "val_accuracy": best["val_accuracy"],
        "val_brier": best["val_brier"],
        "tpr_fpr": run.train_config["tpr_at_fpr"],
        # did it learn at all: the val loss before the first step, a constant predictor's, and what went wrong
        "initial_val_loss": state.initial_val_loss,
        "chance_val_loss": chance,
        "did_not_learn": bool(problems),
        "val_loss_flat": "val_loss_flat" in problems,
        "did_not_learn_because": "; ".join(problems.values()),
        # costs
        "time_to_best_s": best["train_time_s"],
        "train_time_s": state.train_time,
        "compile_time_s": state.compile_time,
        "steps": state.step,
        "epochs_run": state.step / run.steps_per_epoch,
        "early_stopped": state.stopped,
        "step_time_ms": 1000 * state.train_time / state.step,
        "samples_per_s": state.samples_seen / state.train_time,
        "checkpoint_bytes": dir_bytes(run.out_dir / BEST_DIR),
        "latency_ms": latency,
        "latency_batch": int(x_latency.shape[0]),
        "latency_ms_batch1": latency_1,
        "sequence": sequence_cost(run.variant, run.model_config["context"], classifier.clip_positions,
                                  classifier.encoder.embed_positions.num_embeddings),
        "peak_memory_bytes": peak_memory_bytes(run.device),
        # settings and provenance
        "device": str(run.device),
        "precision": "bf16-autocast" if run.device.type == "cuda" else "fp32",
        "compile": {
            "setting": run.train_config["compile"],
            "mode": run.compile_mode,
            "fallback": run.compile_fallback,
            "static_shapes": STATIC_SHAPES if run.compile_mode != "off" else None,
        },
        "batch_size": run.batch_size,
        "lr": run.variant.lr,
        "head_lr": run.optimizer.param_groups[-1]["initial_lr"] if run.optimizer.param_groups[-1]["name"] == "head" else None,
        "schedule": {**run.train_config["schedule"], "warmup_steps": warmup_steps(run.train_config["schedule"], run.last_step), "total_steps": run.last_step},
        "base_model": load_record(run.model_dir)["source"],
        "context": run.model_config["context"],
        "pooling": run.model_config["pooling"],
        # what gwlora.evaluate needs to rebuild the model and score the best checkpoint exactly as the test split was
        "model_config": run.model_config,
        "base_model_dir": str(run.model_dir),
        "input": {"channels": list(run.splits["train"].meta["channels"]), "n_frames": run.splits["train"].meta["n_frames"]},
        "eval_batch_size": run.eval_batch_size,
        "versions": versions(),
        "hardware": hardware(run.device),
        "git_commit": git_commit(),
    }
    write_curve(curve, run.out_dir / "curve.csv")
    write_json(run.out_dir / "summary.json", summary)
    return summary


# The run state file: one header line naming the SHA-256 of the torch.save payload that follows it.
_STATE_HEADER = b"gwlora-run-state sha256="


def save_run_state(run: Run, state: RunState) -> None:
    """The run state (trainable weights, optimizer, RNGs, progress) in one checksummed file, written atomically."""
    trainable = {name for name, p in run.model.named_parameters() if p.requires_grad}
    payload = {
        "fingerprint": run.fingerprint,
        "trainable": {k: v for k, v in run.model.state_dict().items() if k in trainable},
        "optimizer": run.optimizer.state_dict(),
        "schedule": run.schedule.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
        "state": asdict(state),
        "step_hook": run.step_hook.state_dict() if run.step_hook is not None else None,  # families: step hook
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    with atomic_file(run.out_dir / RUN_STATE) as tmp:
        tmp.write_bytes(_STATE_HEADER + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)


def load_run_state(path: Path) -> dict:
    """A saved run state, checked against its checksum and loaded without running code (``weights_only``).

    Raises :class:`StageError` naming `path` when it is corrupt, truncated or not a run state.
    """
    blob = path.read_bytes()
    header, _, data = blob.partition(b"\n")
    if not header.startswith(_STATE_HEADER):
        raise StageError(f"{path}: not a gwlora run state (no checksum header)")
    if hashlib.sha256(data).hexdigest().encode() != header[len(_STATE_HEADER) :]:
        raise StageError(f"{path}: checksum mismatch (corrupt or truncated run state)")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the unpickler refuses anything but tensors and plain containers
        raise StageError(f"{path}: cannot be loaded as a run state: {exc}") from exc


def write_predictions(split: SplitOnDevice, scores: np.ndarray, path: Path) -> None:
    """Every test window's label, injection SNR (0 for noise) and logit, for per-window analyses (AUC vs SNR)."""
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["window", "label", "snr", "logit"])
        for i, (label, snr, logit) in enumerate(zip(split.y.cpu().tolist(), split.snr.tolist(), scores.tolist())):
            writer.writerow([i, int(label), f"{snr:.6g}", f"{logit:.6g}"])


def write_curve(rows: list[dict], path: Path) -> None:
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CURVE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _parser(p):
    p.add_argument("--train-features", required=True, help="train split features (the features stage's directory)")
    p.add_argument("--val-features", required=True, help="val split features (evaluations and the best checkpoint)")
    p.add_argument("--test-features", help="test split features (final metrics of the best checkpoint)")
    p.add_argument("--model", required=True, help="base model directory")
    p.add_argument("--model-config", type=json_arg, required=True, help="validated `model` config section, as JSON")
    p.add_argument("--train-config", type=json_arg, required=True, help="validated `train` config section, as JSON")
    p.add_argument("--variant", type=json_arg, required=True, help="the variant to train, as JSON")
    p.add_argument("--seed", type=int, required=True, help="seed of the head's initialisation, the adapters' and the data order")
    p.add_argument("--threads", type=int, help="CPU threads (default: train.threads of the config)")
    p.add_argument("--out", required=True, help="run directory (curve.csv, summary.json)")


def _run(args):
    """Train one variant of the classifier with one seed."""
    train_config = dict(args.train_config)
    if args.threads:
        train_config["threads"] = args.threads
    features = {"train": args.train_features, "val": args.val_features}
    if args.test_features:
        features["test"] = args.test_features
    summary = train_run(
        features=features,
        model_dir=args.model,
        model_config=args.model_config,
        train_config=train_config,
        variant=Variant.from_dict(args.variant),
        seed=args.seed,
        out_dir=args.out,
    )
    log.info(
        "%s seed %d: val AUC %.4f and val loss %.4f (best checkpoint), test AUC %s, %.1f s training, %d trainable parameters",
        summary["run"], summary["seed"], summary["val_auc"], summary["best_val_loss"],
        "n/a" if summary["test_auc"] is None else f"{summary['test_auc']:.4f}", summary["train_time_s"], summary["trainable_parameters"],
    )


def main(argv=None) -> int:
    return run_stage("train", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
