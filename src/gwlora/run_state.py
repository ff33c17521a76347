"""The run state: what a killed training run resumes from, and which settings it must have been saved with.

``checkpoint/last.pt`` in the run folder while the run is going: one header
line naming the SHA-256 of the ``torch.save`` payload that follows it; the
payload holds tensors and plain containers only and is loaded with
``weights_only=True``, so a corrupt or foreign file is named in the log and the
run starts afresh. It holds the trainable weights, the state of every stateful
part of the loop (the optimizer and the schedule; a method with its own state,
such as a rank allocator, adds its part to the same mapping), the RNGs, and the
loop's progress (:class:`RunState`).
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from .cli import StageError, atomic_file
from .variants import Variant

log = logging.getLogger("gwlora.run_state")

RUN_STATE = "checkpoint/last.pt"
# The run state file: one header line naming the SHA-256 of the torch.save payload that follows it.
_STATE_HEADER = b"gwlora-run-state sha256="
# Keys of the config's `train` section the train stage does not read: each job gets its own variant and seed, and
# lr_selection and lr_search are the aggregate stage's and the workflow's. The workflow passes the section without them, so changing them retrains nothing.
NOT_TRAIN_STAGE_KEYS = ("variants", "seeds", "lr_selection", "lr_search")
# Keys that change how fast a run goes or how it is measured, not the weights it reaches: a state saved under other values resumes.
MEASUREMENT_KEYS = ("threads", "device", "latency_batches", "compile")


def train_stage_settings(train: dict) -> dict:
    """The `train` section as one training job gets it (without :data:`NOT_TRAIN_STAGE_KEYS`)."""
    return {k: v for k, v in train.items() if k not in NOT_TRAIN_STAGE_KEYS}


def run_fingerprint(variant: Variant, seed: int, model_config: dict, train_config: dict, n_train: int) -> dict:
    """What a saved run state must match to be resumed: everything that decides the run's weights."""
    keep = {k: v for k, v in train_stage_settings(train_config).items() if k not in MEASUREMENT_KEYS}
    return {"variant": variant.to_dict(), "seed": seed, "model": model_config, "train": keep, "n_train": n_train}


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> object: ...


@dataclass
class RunState:
    """The loop's progress: everything a resumed run needs besides the model, the stateful parts and the RNGs."""

    step: int = 0
    epoch: int = 1  # 1-based; the run is over once it passes train.epochs
    batches_done: int = 0  # of the current epoch
    samples_seen: int = 0
    train_time: float = 0.0  # seconds spent training, evaluations and compilation excluded
    compile_time: float = 0.0  # seconds spent compiling (the warm-up of each start or resume)
    curve: list[dict] = field(default_factory=list)  # gwlora.records.CurveRow's fields, one per evaluation
    best: dict = field(default_factory=lambda: {"val_loss": float("inf")})  # the curve row of the best checkpoint
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
class Checkpointed:
    """What a run state saves and restores: the model's trainable weights and the stateful parts, on `device`, under `fingerprint`."""

    path: Path
    fingerprint: dict
    model: torch.nn.Module
    parts: dict[str, Stateful]  # optimizer, schedule, and any method's own state
    device: torch.device


def save_run_state(saved: Checkpointed, state: RunState) -> None:
    """The run state (trainable weights, stateful parts, RNGs, progress) in one checksummed file, written atomically."""
    trainable = {name for name, p in saved.model.named_parameters() if p.requires_grad}
    payload = {
        "fingerprint": saved.fingerprint,
        "trainable": {k: v for k, v in saved.model.state_dict().items() if k in trainable},
        **{name: part.state_dict() for name, part in saved.parts.items()},
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(saved.device) if saved.device.type == "cuda" else None,
        "state": asdict(state),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    with atomic_file(saved.path) as tmp:
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


def resume_or_start(saved: Checkpointed, order: torch.Generator, label: str) -> RunState:
    """The saved run state when there is a sound one saved with the same settings (model, stateful parts and RNGs restored), else a fresh one."""
    fresh = RunState(epoch_order_state=order.get_state())
    if not saved.path.exists():
        return fresh
    try:
        payload = load_run_state(saved.path)
    except StageError as exc:
        log.warning("%s: %s; starting afresh", label, exc)
        return fresh
    if payload.get("fingerprint") != saved.fingerprint or not set(saved.parts) <= set(payload):
        log.warning("%s: %s was saved with other settings; starting afresh", label, saved.path)
        return fresh
    saved.model.load_state_dict(payload["trainable"], strict=False)
    for name, part in saved.parts.items():
        part.load_state_dict(payload[name])
    torch.set_rng_state(payload["torch_rng"])
    if saved.device.type == "cuda" and payload["cuda_rng"] is not None:
        torch.cuda.set_rng_state(payload["cuda_rng"], saved.device)
    state = RunState(**payload["state"])
    log.info("%s: resuming from its saved state at step %d (%.1f s of training)", label, state.step, state.train_time)
    return state
