"""Comparison 4: LoRA r=8 against full fine-tuning: step time and peak training memory.

Both are the workflow's classifier with clip context on the same cached
inputs and batch. Memory on CUDA is the allocator's peak while the model is
built and trained for two steps, less what was allocated before (so the
other contender is not counted; the device copy of the small feature cache is,
in both). On the CPU the
allocator keeps no peak, so it is the training state counted tensor by tensor
during a real step: weights + gradients + AdamW state + the activations
autograd saved for backward (hooked with ``saved_tensors_hooks``, each storage
once, the weights not twice).
"""

from __future__ import annotations

import torch
from common import FULL, LORA_R8, Result, Setup, alternate, judged, our_step, ours

STEP_TARGET = 0.7
MEMORY_TARGET = 0.6


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def cpu_training_bytes(model, optimizer, step) -> int:
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    step()  # creates the optimizer state
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    params = list(model.parameters())
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    return nbytes(params) + nbytes(p for p in params if p.requires_grad) + nbytes(state) + sum(saved.values())


def contender(setup: Setup, variant):
    """The variant's step function and its peak training memory in bytes."""
    cuda = setup.device.type == "cuda"
    if cuda:
        setup.sync()
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(setup.device)
        torch.cuda.reset_peak_memory_stats(setup.device)
    model = ours(setup, variant)
    step, optimizer = our_step(setup, model, variant.lr)
    if not cuda:
        return step, cpu_training_bytes(model, optimizer, step)
    for _ in range(2):
        step()
    setup.sync()
    return step, torch.cuda.max_memory_allocated(setup.device) - before


def run(setup: Setup) -> list[Result]:
    full, full_mem = contender(setup, FULL)
    lora, lora_mem = contender(setup, LORA_R8)
    t = alternate({"full": (full, setup.steps), "lora": (lora, setup.steps)}, setup)
    step_ratio = t["lora"] / t["full"]
    mem_ratio = lora_mem / full_mem
    how = "allocator peak" if setup.device.type == "cuda" else "weights+grads+AdamW+saved activations"
    out = []
    for number, title, ratio, target, a, b, unit in (
        ("4a", "LoRA r=8 vs full fine-tuning: step time", step_ratio, STEP_TARGET, 1000 * t["full"], 1000 * t["lora"], "ms/step"),
        ("4b", "LoRA r=8 vs full fine-tuning: peak training memory", mem_ratio, MEMORY_TARGET, full_mem / 2**20, lora_mem / 2**20, "MiB"),
    ):
        text, met = judged(ratio, target, at_least=False)
        out.append(Result(number, title, "full fine-tuning", "LoRA r=8 (W_q, W_v)", f"{unit.split('/')[0]}, LoRA / full",
                          a, b, unit, ratio, text, met, notes=[f"memory: {how}"] if unit == "MiB" else [],
                          extra={"full_step_s": t["full"], "lora_step_s": t["lora"], "full_bytes": full_mem, "lora_bytes": lora_mem}))
    return out
