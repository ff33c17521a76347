"""Scoring a model on a split: the features on the device, the metrics, and a run's best checkpoint saved, verified and scored.

Shared by :mod:`gwlora.train` (validation at every evaluation, the test split
at the end) and :mod:`gwlora.evaluate` (any feature cache, later), so that a
checkpoint scored again gives back the numbers its run recorded.

``best/`` holds the best checkpoint (lowest val loss): a peft adapter
(``save_pretrained``, head included) for LoRA and the other peft methods, the
trained tensors otherwise (bitfit's biases, adapters, prompts, ...), and
``checksums.json`` (every file's SHA-256, verified before it is loaded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from peft.utils import load_peft_weights, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from sklearn.metrics import roc_auc_score, roc_curve

from .cli import StageError, atomic_dir, read_json, write_json
from .families import apply_variant, family
from .variants import Variant
from .download import sha256_of
from .features import load_features, load_snr
from .model import build_classifier, count_parameters
from .precision import Precision, autocast
from .records import write_predictions

# Keep a split's features on the GPU when smaller than this; otherwise stream pinned batches.
DEVICE_RESIDENT_BYTES = 2 * 1024**3
BEST_DIR = "best"
TRAINABLE_FILE = "trainable.safetensors"
CHECKSUMS_FILE = "checksums.json"
LEARNING_MARGIN = 0.01  # nats: how far below its start (and a constant predictor) the best val loss must fall


def resolve_device(name: str) -> torch.device:
    """The device `train.device` (or ``--device``) names: auto is CUDA where there is a GPU, else the CPU."""
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
        self._place(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y).float(), device)

    def _place(self, x_t: torch.Tensor, y_t: torch.Tensor, device: torch.device) -> None:
        self.device = device
        self.n = len(y_t)
        self.resident = device.type == "cpu" or x_t.numel() * x_t.element_size() <= DEVICE_RESIDENT_BYTES
        if self.resident:
            self.x, self.y = x_t.to(device), y_t.to(device)
        else:
            self.x, self.y = x_t.pin_memory(), y_t.pin_memory()

    def with_inputs(self, x: torch.Tensor) -> SplitOnDevice:
        """The same windows (labels, SNRs, meta) with other inputs, row-aligned: what a frozen encoder prefix made of them."""
        if len(x) != self.n:
            raise StageError(f"{len(x)} inputs for a split of {self.n} windows")
        other = object.__new__(SplitOnDevice)
        other.meta, other.snr = self.meta, self.snr
        other._place(x.contiguous().cpu(), self.y.cpu(), self.device)
        return other

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.resident:
            idx = idx.to(self.device, non_blocking=True)
            return self.x[idx], self.y[idx]
        return self.x[idx].to(self.device, non_blocking=True), self.y[idx].to(self.device, non_blocking=True)


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


def padded(idx: torch.Tensor, size: int) -> torch.Tensor:
    """`idx` made `size` long by repeating its own indices (a compiled graph's static batch); the first len(idx) are real."""
    missing = size - len(idx)
    return idx if missing <= 0 else torch.cat([idx, idx.repeat(-(-missing // len(idx)))[:missing]])


@torch.no_grad()
def logits_of(model, split: SplitOnDevice, batch_size: int, precision: Precision, forward=None) -> torch.Tensor:
    """Every window's logit, on the CPU; `forward`: the compiled model, whose static shape pads the last batch (its padding dropped)."""
    model.eval()
    logits = []
    for start in range(0, split.n, batch_size):
        idx = torch.arange(start, min(start + batch_size, split.n))
        if forward is None:
            x, _ = split.batch(idx)
            with autocast(precision, split.device):
                logits.append(model(x).float())
            continue
        x, _ = split.batch(padded(idx, batch_size))
        with autocast(precision, split.device):
            logits.append(forward(x)[: len(idx)].float().clone())  # a copy: CUDA graphs reuse their output memory
    model.train()
    return torch.cat(logits).cpu()


def evaluate(model, split: SplitOnDevice, batch_size: int, precision: Precision, fpr_target: float | None = None, forward=None) -> dict:
    """Loss, AUC, accuracy at logit 0 and Brier score of the model on a split (and TPR at `fpr_target`); ``scores`` holds every window's logit.

    `forward`: the compiled model (see :func:`logits_of`).
    """
    logits = logits_of(model, split, batch_size, precision, forward)
    labels = split.y.cpu()
    y, scores = labels.numpy(), logits.numpy()
    both_classes = 0 < y.sum() < len(y)
    out = {
        "loss": torch.nn.functional.binary_cross_entropy_with_logits(logits, labels).item(),
        "auc": float(roc_auc_score(y, scores)) if both_classes else float("nan"),
        "accuracy": float(((scores > 0) == (y > 0.5)).mean()),
        "brier": float(((torch.sigmoid(logits) - labels) ** 2).mean()),
        "scores": scores,
    }
    if fpr_target is not None:
        out["tpr_at_fpr"] = tpr_at_fpr(y, scores, fpr_target) if both_classes else float("nan")
    return out


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr_target: float) -> float:
    """The true-positive rate where the ROC curve reaches `fpr_target` false positives (interpolated)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.interp(fpr_target, fpr, tpr))


def save_best(model, variant: Variant, best_dir: Path) -> None:
    """The best weights so far: a peft adapter (save_pretrained) for peft's methods, else the trained tensors; with every file's SHA-256."""
    with atomic_dir(best_dir) as tmp:
        if family(variant.family).peft_adapter:
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
    """Load a verified best checkpoint into `model` (built with the same variant)."""
    verify_checkpoint(best_dir)
    device = str(next(model.parameters()).device)
    if family(variant.family).peft_adapter:
        family(variant.family).before_loading(model, variant, best_dir)  # AdaLoRA's checkpoint holds the ranks it had then
        set_peft_model_state_dict(model, load_peft_weights(str(best_dir), device=device))
    else:
        model.load_state_dict(load_file(best_dir / TRAINABLE_FILE, device=device), strict=False)


def score_checkpoint(model, variant: Variant, best_dir: Path, split: SplitOnDevice, batch_size: int, fpr_target: float, predictions: Path,
                     precision: Precision) -> dict:
    """Load a run's best checkpoint into `model` and score `split`: the one way the test split and every shifted test set are scored.

    Writes every window's logit to `predictions`; returns loss, AUC, accuracy,
    Brier score, TPR at `fpr_target`, and ``one_class`` (whether every window
    got the same side of logit 0). Always eager, never through a compiled
    graph, so that :mod:`gwlora.evaluate` reproduces the test split's numbers
    on any machine with the same device type.
    """
    load_best(model, variant, best_dir)
    metrics = evaluate(model, split, batch_size, precision, fpr_target)
    scores = metrics.pop("scores")
    metrics["one_class"] = bool((scores > 0).all() or (scores <= 0).all())
    write_predictions(predictions, split.y.cpu().numpy(), split.snr, scores)
    return metrics


def chance_loss(labels: np.ndarray) -> float:
    """The loss of the best constant predictor on `labels`: their binary entropy in nats (ln 2 when balanced)."""
    p = float(np.mean(labels))
    return float(-(p * np.log(p) + (1 - p) * np.log(1 - p))) if 0 < p < 1 else 0.0


IMPROVING_WINDOW = 2  # evaluations: a run whose lowest val loss fell in its last two was still improving when it ended


def still_improving(val_losses: list[float], stopped_early: bool) -> bool:
    """Whether the val loss may still have been falling when the run ended: more steps could have lowered it.

    True for a run not stopped early whose lowest val loss came at one of its last
    :data:`IMPROVING_WINDOW` evaluations (so also for any run of that few evaluations:
    its curve cannot show convergence). A run stopped early by its patience was not.
    """
    if stopped_early or not val_losses:
        return False
    return int(np.argmin(val_losses)) >= len(val_losses) - IMPROVING_WINDOW


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
