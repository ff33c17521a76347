"""The benchmark suite on a CUDA machine: the CPU suite's ratios with Whisper small, throughput, MFU, and the AUC gap.

    python benchmarks/prepare_gpu_inputs.py            # here, once: writes .gpu-inputs/ (about 58 MiB)
    PYTHONPATH=src python benchmarks/gpu.py --inputs .gpu-inputs   # on the GPU machine, under 5 minutes

Needs only the repository, `.gpu-inputs/` and torch, transformers, peft,
numpy, scikit-learn (no network, LALSuite, datasets or tensorboard). It:

1. builds a random-initialised Whisper *small*-shaped encoder (d_model 768, 12
   layers, 12 heads, FFN 3072) through the base_model stage and measures
   comparisons 1-5 of benchmarks/run.py with it (batch 8 windows, the original study's);
2. measures our training throughput (samples/s) and model FLOPs utilisation
   for full fine-tuning and LoRA r=8 at batch 8, 64 and 256, clip context, and
   30 s padding at batch 8;
3. times inference of every adaptation method (LoRA r=8, BitFit, Houlsby
   adapters b=8 and 64, prompts of 4 and 16 vectors, (IA)^3), clip context,
   at batch 1 and at the study's eval batch (32 windows): the base model, the
   method unmerged and, where peft merges it, merged, as the train stage
   times them (`gwlora.measure.inference_latency`, bf16 autocast on CUDA);
4. trains the pretrained tiny.en encoder carried in `.gpu-inputs/` on the
   carried simulated-data features (config/tiny-en.yaml's data), LoRA r=8 and
   full fine-tuning, with clip context and with 30 s padding, the same seeds,
   initial weights and data order, and compares the test AUCs;
4. measures the targets of issue 14 (``--only targets`` runs this section
   alone), each side by side in one run, with the train stage's own
   ``compile_model`` and ``train_step``: (14a) full fine-tuning at batch 8,
   clip context, eager against compiled (``reduce-overhead``: CUDA graphs),
   target 3x; (14b) LoRA r=8 against full fine-tuning at the study's settings
   (config/config.yaml: its context and batch), both as ``train.compile: auto``
   runs them, and eager, target LoRA/full <= 0.7; (14c) MFU of compiled full
   fine-tuning at that 30 s context and at clip context batch 256, target 40%.
   Compile time (the first three steps, which compile and record the graphs)
   is reported apart from step time. Where a target is missed, a torch.profiler
   summary of the contender's steps (top kernels by device time) is printed
   and saved.

MFU counts model FLOPs analytically (see `encoder_flops`): per sequence of F
log-mel frames (T = F/2 positions) the encoder's forward pass is
2·F·n_mels·3·d + 2·T·3·d² (the two convolutions) + L·[2·T·(4d² + 2·d·d_ff) +
4·T²·d] (projections, MLP, attention scores and values); a training step is
3x that for full fine-tuning and 2x for LoRA (no weight gradients of the
frozen weights; the adapters' and the head's own FLOPs are under 1% and not
counted); MFU = step FLOPs / step time / peak, peak = 989 TFLOP/s (H200 dense
BF16, spec sheet). Prints a table; with $OUT set, writes gpu_benchmarks.json
and gpu_benchmarks.md there.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent / "src"))


def _inputs_dir(argv: list[str]) -> Path:
    for i, arg in enumerate(argv):
        if arg == "--inputs" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith("--inputs="):
            return Path(arg.split("=", 1)[1])
    return HERE.parent / ".gpu-inputs"


if importlib.util.find_spec("accelerate") is None:  # HF Trainer needs it: the carried copy, before transformers loads
    sys.path.append(str(_inputs_dir(sys.argv[1:]) / "pylib"))

import numpy as np
import torch
from common import (
    FULL,
    LORA_R8,
    OURS_MODEL,
    SEED_HEAD,
    Result,
    Setup,
    alternate,
    judged,
    markdown_table,
    our_step,
    ours,
    scratch,
    synthetic_strain,
)
from run import machine, quiet

from gwlora.constants import SPLITS, WHISPER_FULL_FRAMES, WHISPER_HOP_LENGTH, WHISPER_N_MELS

PEAK_BF16 = 989e12  # H200 SXM dense BF16 tensor-core peak (spec); about 790e12 is reached by large GEMMs
SMALL = {"d_model": 768, "encoder_layers": 12, "encoder_attention_heads": 12, "encoder_ffn_dim": 3072, "num_mel_bins": WHISPER_N_MELS, "init_std": 0.02}
TINY = {"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 256, "num_mel_bins": WHISPER_N_MELS, "init_std": 0.1}
GAP_TARGET = 0.005
EAGER_FULL_STEP_MS = 39.0  # docs/benchmarks.md: full fine-tuning at batch 8, clip context, eager, H200 (2026-11-28)
COMPILE_SPEEDUP_TARGET, LORA_VS_FULL_TARGET, MFU_TARGET = 3.0, 0.7, 0.40  # issue 14
STUDY = {"batch": 16, "epochs": 8, "patience": 3, "weight_decay": 0.01}  # config/tiny-en.yaml's train section


class OutOfTime(Exception):
    pass


class Done(Exception):
    """--only targets: the sections after the targets are not run."""


class Clock:
    def __init__(self, budget: float):
        self.start, self.budget = time.perf_counter(), budget

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)


def encoder_flops(cfg: dict, frames: int) -> float:
    """Forward FLOPs of one Whisper encoder pass over `frames` log-mel frames (multiply-add = 2)."""
    d, L, ff, mels = cfg["d_model"], cfg["encoder_layers"], cfg["encoder_ffn_dim"], cfg["num_mel_bins"]
    t = frames // 2
    conv = 2 * frames * mels * 3 * d + 2 * t * 3 * d * d
    return conv + L * (2 * t * (4 * d * d + 2 * d * ff) + 4 * t * t * d)


def step_flops(cfg: dict, frames: int, windows: int, family: str, channels: int = 2) -> float:
    return (3 if family == "full" else 2) * windows * channels * encoder_flops(cfg, frames)


def build_model_dir(shape: dict, out: Path) -> Path:
    from gwlora.base_model import prepare

    prepare({"pretrained": None, "random_init": shape}, 0, out)
    return out


def throughput(setup: Setup, cfg: dict, batches: list[int], clock: Clock) -> list[dict]:
    """Our samples/s and MFU, full and LoRA, clip context at each batch and 30 s padding at the first."""
    rows = []
    cases = [(b, "clip") for b in batches] + [(batches[0], "30s")]
    for batch, context in cases:
        if clock.left() < 120:  # keep time for the AUC-gap training
            rows.append({"batch": batch, "context": context, "skipped": "time budget"})
            continue
        s = dataclasses.replace(setup, batch=batch)
        steps = {}
        for variant in (FULL, LORA_R8):
            step, _ = our_step(s, ours(s, variant, context=context), variant.lr)
            steps[variant.family] = (step, s.steps if context == "clip" else s.heavy_steps)
        t = alternate(steps, s)
        frames = s.n_samples // WHISPER_HOP_LENGTH if context == "clip" else WHISPER_FULL_FRAMES
        for family, secs in t.items():
            flops = step_flops(cfg, frames, batch, family)
            rows.append({"batch": batch, "context": context, "variant": family, "step_ms": 1000 * secs,
                         "samples_per_s": batch / secs, "tflops": flops / secs / 1e12,
                         "mfu": flops / secs / PEAK_BF16 if setup.device.type == "cuda" else None})
        del steps
        if setup.device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# The adaptation methods timed by `method_latency`, as config/tiny-en.yaml configures them (train.variants)
METHODS = {
    "lora": {"ranks": [8], "alpha": None, "target_modules": ["q_proj", "v_proj"], "scaling": "alpha/r", "dora": False, "dropout": 0.0},
    "bitfit": {},
    "adapter": {"bottleneck": [8, 64], "style": "houlsby"},
    "prompt": {"length": [4, 16]},
    "peft-ia3": {"type": "IA3", "target_modules": ["k_proj", "v_proj", "fc2"], "feedforward_modules": ["fc2"]},
}
LATENCY_BATCHES = (1, 2 * STUDY["batch"])  # batch 1 and the study's eval batch (the train stage times that one)


def method_latency(model_dir: Path, device, frames: int, batches=LATENCY_BATCHES, reps: int = 20, channels: int = 2) -> list[dict]:
    """Inference latency (ms, median of `reps`) of each method of :data:`METHODS` at each batch: base, unmerged, merged where it merges."""
    from gwlora.config import expand_variants
    from gwlora.families import apply_variant
    from gwlora.model import build_classifier
    from gwlora.measure import inference_latency
    from gwlora.precision import resolve_precision

    rows = []
    for variant in expand_variants({"variants": METHODS, "lr": 1e-3}).values():
        torch.manual_seed(0)
        model = apply_variant(build_classifier(model_dir, channels, frames, OURS_MODEL), variant).to(device)
        for batch in batches:
            x = torch.randn(batch, channels, WHISPER_N_MELS, frames, device=device)
            timed = inference_latency(model, variant, x, reps, resolve_precision("auto", device))
            row = {"variant": variant.name, "family": variant.family, "batch": batch, **{f"{k}_ms": v for k, v in timed.items()}}
            for mode in ("unmerged", "merged"):
                if mode in timed:
                    row[f"{mode}_overhead_percent"] = 100 * (timed[mode] / timed["base"] - 1)
            rows.append(row)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def float32_cache(src: Path, out: Path, limit: int | None = None) -> Path:
    """The carried float16 features as the features stage's float32 cache (the first `limit` windows)."""
    from gwlora.features import write_features

    labels = np.load(src / "labels.npy")[:limit]
    meta = json.loads((src / "meta.json").read_text())
    write_features(out, np.load(src / "features.npy")[:limit], labels, np.zeros(len(labels)), split=meta["split"], channels=meta["channels"])
    return out


def train_for_auc(encoder_dir: Path, splits: dict, variant, context: str, seed: int, device, deadline: float, epochs: int) -> dict:
    """Train like the train stage (same step, optimizer, evaluation; early stopping on val loss), return test metrics."""
    from gwlora.families import apply_variant
    from gwlora.model import build_classifier
    from gwlora.precision import resolve_precision
    from gwlora.scoring import evaluate
    from gwlora.train import make_optimizer, train_step

    train, val, test = splits["train"], splits["val"], splits["test"]
    torch.manual_seed(seed)
    base = build_classifier(encoder_dir, len(train.meta["channels"]), train.meta["n_frames"],
                            {"context": context, "pooling": "mean", "head_hidden": SEED_HEAD})
    torch.manual_seed(seed)  # the same head (and adapters) for both contexts: clip's sliced positions used the RNG
    for layer in base.head:
        if isinstance(layer, torch.nn.Linear):
            layer.reset_parameters()
    model = apply_variant(base, variant).to(device).train()
    optimizer = make_optimizer(model, variant.lr, STUDY["weight_decay"])
    loss_fn = torch.nn.BCEWithLogitsLoss()
    precision = resolve_precision("auto", device)  # the train stage's default
    order = torch.Generator().manual_seed(seed)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    best, best_state, stale, done, start, cut = float("inf"), None, 0, 0, time.perf_counter(), False
    for done in range(1, epochs + 1):
        for idx in torch.randperm(train.n, generator=order).split(STUDY["batch"]):
            x, y = train.batch(idx)
            train_step(model, optimizer, loss_fn, x, y, precision)
        metrics = evaluate(model, val, 2 * STUDY["batch"], precision)
        if metrics["loss"] < best:
            best, stale = metrics["loss"], 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items() if k in trainable}
        else:
            stale += 1
            if stale >= STUDY["patience"]:
                break
        if time.perf_counter() > deadline:
            cut = True
            break
    model.load_state_dict(best_state, strict=False)
    result = evaluate(model, test, 2 * STUDY["batch"], precision)
    return {"variant": variant.name, "context": context, "seed": seed, "test_auc": result["auc"], "test_loss": result["loss"],
            "best_val_loss": best, "epochs": done, "seconds": time.perf_counter() - start, "cut_by_time_budget": cut}


def auc_gap(inputs: Path, work: Path, device, seeds: list[int], clock: Clock, reserve: float, smoke: bool) -> tuple[list[dict], list[Result]]:
    from gwlora.scoring import SplitOnDevice

    limit, epochs = (12, 1) if smoke else (None, STUDY["epochs"])
    splits = {name: SplitOnDevice(float32_cache(inputs / "features" / name, work / "auc" / name, limit), device)
              for name in SPLITS}
    runs: list[dict] = []
    results = []
    for variant in (LORA_R8, FULL):
        gaps = []
        for seed in seeds:
            if clock.left() < reserve + 20:
                break
            pair = {}
            for context in ("clip", "30s"):
                deadline = time.perf_counter() + max(clock.left() - reserve, 5) / 2
                pair[context] = train_for_auc(inputs / "encoder", splits, variant, context, seed, device, deadline, epochs)
                runs.append(pair[context])
                print(f"    {variant.name} seed {seed} {context}: test AUC {pair[context]['test_auc']:.4f} "
                      f"({pair[context]['epochs']} epochs, {pair[context]['seconds']:.0f} s)", flush=True)
            gaps.append(pair["clip"]["test_auc"] - pair["30s"]["test_auc"])
        if not gaps:
            continue
        gap = float(np.mean(gaps))
        clip_auc = np.mean([r["test_auc"] for r in runs if r["variant"] == variant.name and r["context"] == "clip"])
        padded_auc = np.mean([r["test_auc"] for r in runs if r["variant"] == variant.name and r["context"] == "30s"])
        met = abs(gap) <= GAP_TARGET
        sd = float(np.std(gaps, ddof=1)) if len(gaps) > 1 else float("nan")
        results.append(Result(
            f"3-auc {variant.name}", f"clip vs 30 s: test AUC after training (tiny.en, {variant.name})", "30 s padding", "clip context",
            "test AUC gap, clip - 30 s", float(padded_auc), float(clip_auc), "test AUC", gap, f"|gap| <= {GAP_TARGET}", met,
            notes=[f"{len(gaps)} seeds; per-seed gaps {', '.join(f'{g:+.4f}' for g in gaps)}; sd {sd:.4f}"],
            extra={"gaps": gaps}))
    return runs, results


def study_settings() -> dict:
    """config/config.yaml's context and batch: the study's own settings (14b, 14c)."""
    import yaml

    config = yaml.safe_load((HERE.parent / "config" / "config.yaml").read_text())
    context = config["model"].get("context", "clip")
    return {"context": context[-1] if isinstance(context, list) else context, "batch": config["train"].get("batch_size", 8)}


def train_step_of(setup: Setup, variant, context: str, batch: int, mode: str):
    """The train stage's step (gwlora.train.train_step) of `variant` through `mode` (off: eager); (step, compile seconds)."""
    from gwlora.precision import resolve_precision
    from gwlora.scoring import SplitOnDevice
    from gwlora.train import compile_model, make_optimizer, train_step

    s = dataclasses.replace(setup, batch=batch)
    model = ours(s, variant, context=context)
    split = SplitOnDevice(s.features_dir(), s.device)
    optimizer, loss_fn = make_optimizer(model, variant.lr, 0.01), torch.nn.BCEWithLogitsLoss()
    forward = model if mode == "off" else compile_model(model, mode)
    precision = resolve_precision("auto", s.device)  # the train stage's default
    order = torch.Generator().manual_seed(0)

    def step() -> None:
        x, y = split.batch(torch.randint(split.n, (batch,), generator=order))
        train_step(forward, optimizer, loss_fn, x, y, precision)

    seconds = 0.0
    if mode != "off":  # compilation happens in the first calls; CUDA graphs record on the third
        s.sync()
        start = time.perf_counter()
        for _ in range(3):
            step()
        s.sync()
        seconds = time.perf_counter() - start
    return step, seconds


def profile_summary(step, setup: Setup, steps: int = 5, rows: int = 15) -> str:
    """torch.profiler's table of `steps` steps: the operators and kernels taking the most device (else CPU) time."""
    from torch.profiler import ProfilerActivity, profile

    cuda = setup.device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for _ in range(steps):
            step()
        setup.sync()
    return prof.key_averages().table(sort_by="device_time_total" if cuda else "cpu_time_total", row_limit=rows)


def issue14_targets(setup: Setup, cfg: dict, clock: Clock, smoke: bool, record: dict) -> list[Result]:
    """Issue 14's targets (14a-c), each side by side in one run; profiles of the missed ones go in ``record["profiles"]``."""
    from gwlora.train import compile_mode

    cuda = setup.device.type == "cuda"
    small_mode = "reduce-overhead" if cuda else "default"  # CUDA graphs need CUDA
    study = study_settings()
    if smoke:
        study["batch"] = 2
    results, compile_s = [], {}
    clip_frames = setup.n_samples // WHISPER_HOP_LENGTH

    def frames_of(context: str) -> int:
        from gwlora.config import context_frames

        return context_frames(context, clip_frames)

    def mfu(family: str, context: str, batch: int, secs: float) -> float | None:
        return step_flops(cfg, frames_of(context), batch, family) / secs / PEAK_BF16 if cuda else None

    def missed(number: str, step) -> None:
        record.setdefault("profiles", {})[number] = table = profile_summary(step, setup, steps=2 if smoke else 5)
        print(f"    profile of [{number}] (target missed):\n{table}", flush=True)

    def reset() -> None:
        torch._dynamo.reset()
        if cuda:
            torch.cuda.empty_cache()

    batch = 2 if smoke else 8
    # 14a: eager against compiled, full fine-tuning, clip context, batch 8
    eager, _ = train_step_of(setup, FULL, "clip", batch, "off")
    compiled, compile_s["14a"] = train_step_of(setup, FULL, "clip", batch, small_mode)
    t = alternate({"eager": (eager, setup.steps), "compiled": (compiled, setup.steps)}, setup)
    ratio = t["eager"] / t["compiled"]
    target, met = judged(ratio, COMPILE_SPEEDUP_TARGET, True)
    results.append(Result("14a", f"full fine-tuning step, batch {batch}, clip: compiled ({small_mode}) vs eager", "eager", f"compiled ({small_mode})",
                          "step time, eager / compiled", 1000 * t["eager"], 1000 * t["compiled"], "ms/step", ratio, target, met,
                          notes=[f"compile time {compile_s['14a']:.1f} s (first 3 steps), not in the step time; "
                                 f"the issue's anchor: {EAGER_FULL_STEP_MS:g} ms eager on the H200, so <= {EAGER_FULL_STEP_MS / 3:.0f} ms"],
                          extra={"compile_s": compile_s["14a"]}))
    if met is False:
        missed("14a", compiled)
    del eager, compiled
    reset()
    # 14b: LoRA r=8 against full at the study's context and batch, as train.compile auto runs them, and eager
    if clock.left() < 60 and not smoke:
        record["skipped"].append("14b, 14c: time budget")
        return results
    context, batch = study["context"], study["batch"]
    mode = compile_mode("auto", setup.device, batch) if cuda else "default"
    steps = {}
    for variant in (FULL, LORA_R8):
        steps[f"{variant.family} eager"] = (train_step_of(setup, variant, context, batch, "off")[0], setup.heavy_steps)
        step, compile_s[f"14b {variant.family}"] = train_step_of(setup, variant, context, batch, mode)
        steps[f"{variant.family} compiled"] = (step, setup.heavy_steps)
    t = alternate(steps, setup)
    for kind in ("compiled", "eager"):
        ratio = t[f"lora {kind}"] / t[f"full {kind}"]
        target, met = judged(ratio, LORA_VS_FULL_TARGET, False)
        results.append(Result(f"14b {kind}", f"LoRA r=8 vs full fine-tuning at the study's settings ({context}, batch {batch}), {kind}",
                              "full fine-tuning", "LoRA r=8 (W_q, W_v)", "step time, LoRA / full", 1000 * t[f"full {kind}"],
                              1000 * t[f"lora {kind}"], "ms/step", ratio, target, met,
                              notes=[f"mode {mode}; compile time full {compile_s['14b full']:.1f} s, LoRA {compile_s['14b lora']:.1f} s"]
                              if kind == "compiled" else [],
                              extra={"step_ms": {k: 1000 * v for k, v in t.items()}}))
    if results[-2].met is False:
        missed("14b compiled", steps["lora compiled"][0])
    # 14c: MFU of compiled full fine-tuning at the study's context, then at clip context batch 256
    cases = [(context, batch, t["full compiled"], steps["full compiled"][0])]
    del steps
    reset()
    big = 4 if smoke else 256
    if clock.left() > 30 or smoke:
        step, compile_s["14c"] = train_step_of(setup, FULL, "clip", big, compile_mode("auto", setup.device, big) if cuda else "default")
        cases.append(("clip", big, alternate({"full": (step, setup.steps)}, setup)["full"], step))
    else:
        record["skipped"].append(f"14c at clip batch {big}: time budget")
    for ctx, b, secs, step in cases:
        value = mfu("full", ctx, b, secs)
        target, met = judged(value, MFU_TARGET, True)
        results.append(Result(f"14c {ctx} b{b}", f"MFU of compiled full fine-tuning, {ctx} context, batch {b}", "peak bf16", "ours, compiled",
                              "MFU", None, 1000 * secs, "ms/step", value, target, met,
                              notes=[f"{step_flops(cfg, frames_of(ctx), b, 'full') / secs / 1e12:.1f} TFLOP/s"]))
        if met is False:
            missed(f"14c {ctx} b{b}", step)
    reset()
    record["compile_s"] = compile_s
    return results


def guarded(record: dict, what: str, fn, fallback):
    """Run one section; an error is recorded (and printed) instead of ending the run, so the rest is still measured."""
    try:
        return fn()
    except OutOfTime:
        raise
    except Exception as exc:  # noqa: BLE001  (a blind run must report what failed and go on)
        traceback.print_exc()
        record["skipped"].append(f"{what}: failed: {type(exc).__name__}: {exc}")
        return fallback


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", type=Path, default=HERE.parent / ".gpu-inputs", help="folder made by prepare_gpu_inputs.py")
    p.add_argument("--device", default="cuda")
    p.add_argument("--smoke", action="store_true", help="tiny model, few steps, short AUC runs (to test this script on a CPU)")
    p.add_argument("--budget", type=float, default=240.0, help="seconds for everything; sections are skipped past it")
    p.add_argument("--seeds", type=int, default=3, help="seeds of the AUC-gap training runs (0: skip the AUC gap)")
    p.add_argument("--batch", type=int, default=8, help="windows per step of comparisons 1-5 (8: the original study's LoRA batch)")
    p.add_argument("--only", choices=["all", "targets"], default="all", help="targets: issue 14's targets alone (compiled vs eager, LoRA vs full, MFU)")
    p.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    quiet()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    clock = Clock(args.budget)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as the train stage; it speeds the original study's fp32 pipeline too
        torch.backends.cudnn.allow_tf32 = True
    info = machine()
    print(f"gwlora GPU benchmarks: {info['cuda'] or info['cpu']}, torch {info['torch']}, device {device}", flush=True)
    work = scratch()
    shape = TINY if args.smoke else SMALL
    results: list[Result] = []
    record = {"machine": info, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "model": "whisper-small shape, random init"
              if not args.smoke else "tiny random init (smoke)", "shape": shape, "peak_flops": PEAK_BF16, "results": [],
              "throughput": [], "latency": [], "auc_runs": [], "skipped": []}

    def on_alarm(*_):
        raise OutOfTime()

    if hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(int(args.budget + 45))  # a hard stop: whatever was measured is still written
    try:
        strain, labels = synthetic_strain(16 if args.smoke else 64)
        setup = Setup(device=device, model_dir=build_model_dir(shape, work / "model"), batch=2 if args.smoke else args.batch,
                      reps=2 if args.smoke else 5, steps=1 if args.smoke else 10, heavy_steps=1 if args.smoke else 2,
                      strain=strain, labels=labels, work=work, smoke=args.smoke, label=record["model"])
        print("issue 14 targets (compiled vs eager, LoRA vs full at the study's settings, MFU):", flush=True)
        for r in guarded(record, "issue 14 targets", lambda: issue14_targets(setup, shape, clock, args.smoke, record), []):
            results.append(r)
            print(f"[{r.number}] {r.title}: {r.contender_value if r.contender_value is None else f'{r.contender_value:.4g}'} {r.unit}, "
                  f"ratio {r.ratio if r.ratio is None else f'{r.ratio:.3g}'}, target {r.target}: {r.verdict}", flush=True)
        if args.only == "targets":
            raise Done()
        for number, module in ((5, "cmp5_features"), (4, "cmp4_lora"), (3, "cmp3_context"), (1, "cmp1_seed"), (2, "cmp2_trainer")):
            if clock.left() < 150 * (not args.smoke):  # keep time for throughput and the AUC gap
                record["skipped"].append(f"comparison {number}: time budget")
                continue
            t0 = time.perf_counter()
            for r in guarded(record, f"comparison {number}", lambda m=module: importlib.import_module(m).run(setup), []):
                results.append(r)
                print(f"[{r.number}] {r.title}: ratio {r.ratio if r.ratio is None else f'{r.ratio:.3g}'}, target {r.target}: "
                      f"{r.verdict} [{time.perf_counter() - t0:.0f} s]", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print("throughput and MFU (ours):", flush=True)
        batches = [2, 4] if args.smoke else [8, 64, 256]
        record["throughput"] = guarded(record, "throughput", lambda: throughput(dataclasses.replace(setup, reps=2 if args.smoke else 3), shape, batches, clock), [])
        for row in record["throughput"]:
            print("   ", json.dumps(row), flush=True)
        print("inference latency per adaptation method:", flush=True)
        if clock.left() < 90 * (not args.smoke):
            record["skipped"].append("method latency: time budget")
        else:
            record["latency"] = guarded(record, "method latency", lambda: method_latency(
                setup.model_dir, device, setup.n_samples // WHISPER_HOP_LENGTH, reps=2 if args.smoke else 20), [])
            for row in record["latency"]:
                print("   ", json.dumps(row), flush=True)
        if args.seeds == 0:
            record["skipped"].append("AUC gap: --seeds 0")
        elif (args.inputs / "features").is_dir():
            print("AUC gap, clip vs 30 s (tiny.en, carried features):", flush=True)
            seeds = list(range(1 if args.smoke else args.seeds))
            record["auc_runs"], gap = guarded(record, "AUC gap", lambda: auc_gap(args.inputs, work, device, seeds, clock, reserve=5, smoke=args.smoke), ([], []))
            results += gap
        else:
            record["skipped"].append(f"AUC gap: no {args.inputs}/features (run benchmarks/prepare_gpu_inputs.py)")
    except OutOfTime:
        record["skipped"].append("hard time limit reached: later sections not run")
    except Done:
        record["skipped"].append("--only targets: the other sections not run")
    finally:
        if hasattr(signal, "SIGALRM"):
            signal.alarm(0)
        shutil.rmtree(work, ignore_errors=True)
    record["results"] = [r.to_dict() for r in results]
    record["seconds"] = time.perf_counter() - clock.start
    md = snippet(record, results)
    print()
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_benchmarks.json").write_text(json.dumps(record, indent=2, default=str))
        (args.out / "gpu_benchmarks.md").write_text(md + "\n")
    return 0


def snippet(record: dict, results: list[Result]) -> str:
    m = record["machine"]
    head = (f"GPU run {record['date']}: {m['cuda'] or m['cpu']}, torch {m['torch']}, {record['model']}, "
            f"{record['seconds']:.0f} s in all.")
    lines = [head, "", markdown_table(results), "",
             "| context | batch | variant | step (ms) | samples/s | TFLOP/s | MFU |", "|:--|--:|:--|--:|--:|--:|--:|"]
    for r in record["throughput"]:
        if "skipped" in r:
            lines.append(f"| {r['context']} | {r['batch']} | skipped ({r['skipped']}) | | | | |")
        else:
            mfu = "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
            lines.append(f"| {r['context']} | {r['batch']} | {r['variant']} | {r['step_ms']:.1f} | {r['samples_per_s']:.0f} | {r['tflops']:.1f} | {mfu} |")
    if record["latency"]:
        lines += ["", "| method | batch | base (ms) | unmerged (ms) | merged (ms) |", "|:--|--:|--:|--:|--:|"]
        for r in record["latency"]:
            cell = lambda mode: "—" if f"{mode}_ms" not in r else f"{r[f'{mode}_ms']:.2f} ({r[f'{mode}_overhead_percent']:+.0f}%)"  # noqa: E731
            lines.append(f"| {r['variant']} | {r['batch']} | {r['base_ms']:.2f} | {cell('unmerged')} | {cell('merged')} |")
    for r in results:
        lines += [f"- [{r.number}] {note}" for note in r.notes]
    lines += [f"- skipped: {s}" for s in record["skipped"]]
    for number, table in record.get("profiles", {}).items():
        lines += ["", f"Profile of [{number}] (target missed), torch.profiler, top operators by device time:", "", "```", table, "```"]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
