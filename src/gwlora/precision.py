"""The numeric precision of training and scoring (``train.precision``: ``auto``, ``fp32`` or ``bf16``).

``bf16`` is bf16 *autocast*: master weights, the optimiser state and the loss stay fp32, the
matrix products run in bf16. ``auto`` picks it where the hardware multiplies bf16 natively:
on CUDA, and on a CPU whose matrix units torch reports (Intel AMX tiles or AVX512-BF16; an
AMD EPYC of the same machine kind may have neither). Elsewhere bf16 is emulated and slower
than fp32, so ``auto`` stays fp32. The choice is asked of torch (its own CPU feature checks,
the ones inductor and oneDNN use), never inferred from the processor's name or ``/proc``.

A resumed run keeps the precision recorded when it started, whatever the machine it resumes
on says (:func:`resolve_precision`'s ``recorded``), so one run never mixes two precisions.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from .cli import StageError

SETTINGS = ("auto", "fp32", "bf16")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Precision:
    """The precision a run computes in, and why it was chosen (logged and recorded in summary.json)."""

    name: str  # fp32 | bf16
    reason: str

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.name == "bf16" else None


FP32 = Precision("fp32", "fp32 asked for")  # for code that computes in fp32 on purpose (a test, a reference)


def _cpu_feature(name: str) -> bool:
    """torch's own check of a CPU feature (``torch.cpu._is_<name>_supported``); False where this torch has none."""
    check = getattr(torch.cpu, f"_is_{name}_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def cpu_bf16_units() -> list[str]:
    """The native bf16 matrix units torch reports on this CPU: ``amx_bf16`` (AMX tiles), ``avx512_bf16``."""
    units = []
    if _cpu_feature("amx_tile"):
        units.append("amx_bf16")
    if _cpu_feature("avx512_bf16"):
        units.append("avx512_bf16")
    return units


def resolve_precision(setting: str, device: torch.device, recorded: str | None = None) -> Precision:
    """The precision for `setting` on `device`; a resumed run's `recorded` precision wins over the machine's."""
    if setting not in SETTINGS:
        raise StageError(f"train.precision {setting!r}: expected one of {', '.join(SETTINGS)}")
    if recorded is not None:
        if recorded not in PRECISIONS:
            raise StageError(f"the run state records precision {recorded!r}, expected one of {', '.join(PRECISIONS)}")
        return Precision(recorded, f"resumed: the run started in {recorded}")
    if setting != "auto":
        return Precision(setting, f"train.precision: {setting}")
    if device.type == "cuda":
        return Precision("bf16", "auto: CUDA multiplies bf16 natively")
    units = cpu_bf16_units()
    if device.type == "cpu" and units:
        return Precision("bf16", f"auto: this CPU has native bf16 matrix units ({', '.join(units)})")
    if device.type == "cpu":
        return Precision("fp32", "auto: torch reports no native bf16 matrix unit on this CPU (no AMX, no AVX512-BF16)")
    return Precision("fp32", f"auto: fp32 on {device.type}")


def autocast(precision: Precision, device: torch.device):
    """The autocast context of `precision` on `device` (a null context for fp32)."""
    if precision.autocast_dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=precision.autocast_dtype)


class RunPrecision:
    """A run's precision as a part of its run state (``state_dict``/``load_state_dict``): a resumed run keeps the one it started in."""

    def __init__(self, setting: str, device: torch.device):
        self.setting, self.device = setting, device
        self.current = resolve_precision(setting, device)

    def state_dict(self) -> dict:
        return {"name": self.current.name, "reason": self.current.reason}

    def load_state_dict(self, state: dict) -> None:
        self.current = resolve_precision(self.setting, self.device, recorded=state.get("name"))


def recorded_precision(name: str, device: torch.device) -> Precision:
    """The precision summary.json records a run trained in, so that gwlora-evaluate scores it alike."""
    if name not in PRECISIONS:
        raise StageError(f"summary.json records precision {name!r}, expected one of {', '.join(PRECISIONS)}")
    return resolve_precision("auto", device, recorded=name)
