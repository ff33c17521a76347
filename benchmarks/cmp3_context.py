"""Comparison 3: clip-length encoder context against Whisper's 30 s padding, per training step.

Both are the workflow's own classifier (gwlora.model, LoRA r=8, the same cached
clip log-mels): ``context: clip`` cuts the positional embedding to the clip (50
positions for 1 s), ``context: 30s`` pads the log-mels as Whisper's extractor
pads with silence and runs all 1500 positions. The accuracy half of the
comparison (test AUC after training each) needs a GPU: benchmarks/gpu.py.
"""

from __future__ import annotations

from common import LORA_R8, Result, Setup, alternate, judged, our_step, ours

TARGET = 10.0


def run(setup: Setup) -> list[Result]:
    clip, _ = our_step(setup, ours(setup, LORA_R8, context="clip"), LORA_R8.lr)
    padded, _ = our_step(setup, ours(setup, LORA_R8, context="30s"), LORA_R8.lr)
    t = alternate({"30s": (padded, setup.heavy_steps), "clip": (clip, setup.steps)}, setup)
    ratio = t["30s"] / t["clip"]
    target, met = judged(ratio, TARGET, at_least=True)
    return [Result(
        3, "clip context vs 30 s padding (training step)", "30 s padding (1500 positions)", "clip (50 positions)",
        "step time, 30 s / clip", 1000 * t["30s"], 1000 * t["clip"], "ms/step", ratio, target, met,
        notes=["test-AUC gap after training: benchmarks/gpu.py (too slow padded on a CPU)"] if setup.device.type == "cpu" else [],
        extra={"padded_step_s": t["30s"], "clip_step_s": t["clip"]},
    )]
