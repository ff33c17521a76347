"""Comparison 2: Hugging Face ``Trainer`` + peft against our loop, on the same precomputed inputs.

The same peft model (our classifier, LoRA r=8) is trained either by
``Trainer`` (a torch Dataset over the cached log-mels, its default collator,
fused AdamW, a constant learning rate, no logging, evaluation or saving; bf16
on CUDA as ours) or by the train stage's loop. Each repetition runs one
untimed step and then the timed ones, alternating between the two; Trainer's
steady-state step time comes from a callback at each step's end, so its
start-up (accelerate, optimizer creation) is not charged to it.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from common import LORA_R8, Result, Setup, judged, our_step, ours
from torch.utils.data import Dataset
from transformers import TrainerCallback

from gwlora.features import load_features

TARGET = 1.2


class CachedFeatures(Dataset):
    def __init__(self, features_dir):
        x, y, _ = load_features(features_dir)
        self.x, self.y = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y).float()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return {"features": self.x[i], "labels": self.y[i]}


class StepClock(TrainerCallback):
    def __init__(self, setup: Setup):
        self.setup, self.ends = setup, []

    def on_step_end(self, args, state, control, **kwargs):
        self.setup.sync()
        self.ends.append(time.perf_counter())


def bce(outputs, labels, num_items_in_batch=None):
    return torch.nn.functional.binary_cross_entropy_with_logits(outputs.float(), labels)


def make_trainer(setup: Setup, clock: StepClock):
    from transformers import (  # Trainer needs accelerate
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )

    args = TrainingArguments(
        output_dir=str(setup.work / "trainer"), per_device_train_batch_size=setup.batch, max_steps=setup.steps + 1,
        learning_rate=LORA_R8.lr, weight_decay=0.01, lr_scheduler_type="constant", logging_strategy="no",
        save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True, seed=0,
        use_cpu=setup.device.type == "cpu", bf16=setup.device.type == "cuda", dataloader_num_workers=0,
        label_names=["labels"],
    )
    trainer = Trainer(model=ours(setup, LORA_R8), args=args, train_dataset=CachedFeatures(setup.features_dir()),
                      compute_loss_func=bce, callbacks=[clock])
    trainer.remove_callback(PrinterCallback)  # it prints the run's summary dict
    return trainer


def run(setup: Setup) -> list[Result]:
    try:
        import accelerate  # noqa: F401  (Trainer needs it)
    except ImportError:
        return [Result(2, "HF Trainer + peft vs our loop", "Trainer", "ours", "samples/s, ours / Trainer",
                       None, None, "samples/s", None, f">= {TARGET:g}", None, notes=["skipped: accelerate is not installed"])]
    clock = StepClock(setup)
    trainer = make_trainer(setup, clock)
    mine, _ = our_step(setup, ours(setup, LORA_R8), LORA_R8.lr)
    times = {"trainer": [], "ours": []}
    for rep in range(setup.reps):
        for name in (("trainer", "ours") if rep % 2 == 0 else ("ours", "trainer")):
            if name == "trainer":
                clock.ends.clear()
                trainer.train()
                times[name].append((clock.ends[-1] - clock.ends[0]) / (len(clock.ends) - 1))
            else:
                mine()
                setup.sync()
                start = time.perf_counter()
                for _ in range(setup.steps):
                    mine()
                setup.sync()
                times[name].append((time.perf_counter() - start) / setup.steps)
    t = {k: float(np.median(v)) for k, v in times.items()}
    ratio = t["trainer"] / t["ours"]
    target, met = judged(ratio, TARGET, at_least=True)
    overhead_ms = 1000 * (t["trainer"] - t["ours"])
    return [Result(
        2, "HF Trainer + peft vs our loop (same cached inputs)", "Trainer + peft", "ours: train_step over the device cache",
        "samples/s, ours / Trainer", setup.batch / t["trainer"], setup.batch / t["ours"], "samples/s", ratio, target, met,
        notes=[f"Trainer's extra time per step: {overhead_ms:.3g} ms of {1000 * t['trainer']:.4g} ms"],
        extra={"trainer_step_s": t["trainer"], "ours_step_s": t["ours"]},
    )]
