"""The benchmark suite: each comparison of issue 7, measured side by side, printed against its target.

    python benchmarks/run.py                  # the full CPU suite (about 11 minutes on 2 cores)
    python benchmarks/run.py --smoke          # seconds: a tiny random-init model, few steps (CI)
    python benchmarks/run.py --only 1 --only 5 --out bench.json

Comparisons: 1 the original study's pipeline, 2 HF Trainer + peft, 3 clip vs 30 s
context, 4 LoRA r=8 vs full fine-tuning (4a step time, 4b memory), 5 feature
extraction, 6 workflow overhead, 7 the training step of each family in fp32 vs
bf16 autocast and the attention kernels, 8 frozen and partial runs on cached encoder
outputs (issue 20). Each prints its ratio next to its target,
PASS or MISS; docs/benchmarks.md records the figures and explains any miss.
benchmarks/gpu.py is the same on a CUDA machine, with Whisper small.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent / "src"))  # the checkout's own package, installed or not

import torch
from common import Setup, markdown_table, scratch, synthetic_strain, tiny_model_dir

MODULES = {1: "cmp1_seed", 2: "cmp2_trainer", 3: "cmp3_context", 4: "cmp4_lora", 5: "cmp5_features", 6: "cmp6_workflow",
           7: "cmp7_precision", 8: "cmp8_encoder_cache"}
DEFAULT_MODEL = HERE.parent / ".." / "shared" / "models" / "whisper-tiny.en-encoder"


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def quiet() -> None:
    """No progress bars or load reports between the figures."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="seconds-long version with a tiny random-init model (CI)")
    p.add_argument("--only", type=int, action="append", choices=sorted(MODULES), help="run only this comparison (repeatable)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="Whisper model directory (default: ../shared/models/whisper-tiny.en-encoder)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: as the workflow's training jobs here)")
    p.add_argument("--batch", type=int, default=8, help="training batch in windows (the original study's LoRA batch)")
    p.add_argument("--windows", type=int, default=64, help="windows of synthetic 1 s, two-detector strain")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per contender")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return p.parse_args(argv)


def make_setup(args) -> Setup:
    work = scratch()
    if args.smoke:
        model_dir, label = tiny_model_dir(work / "model"), "tiny random-init Whisper (d_model 32, 2 layers)"
        windows, batch, reps, steps, heavy = 8, 2, 2, 1, 1
    else:
        model_dir, label = args.model.resolve(), str(args.model)
        windows, batch, reps, steps, heavy = args.windows, args.batch, args.reps, 4, 1
    strain, labels = synthetic_strain(windows)
    return Setup(device=torch.device(args.device), model_dir=model_dir, batch=batch, reps=reps, steps=steps,
                 heavy_steps=heavy, strain=strain, labels=labels, work=work, smoke=args.smoke, label=label)


def main(argv=None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet()
    setup = make_setup(args)
    info = machine()
    print(f"gwlora benchmarks{' (smoke)' if args.smoke else ''}: {info['cpu']}, {info['cores']} cores, "
          f"torch {info['torch']} with {info['threads']} threads, device {setup.device}")
    print(f"model: {setup.label}; batch {setup.batch} windows x 2 detectors; {len(setup.labels)} windows; {setup.reps} repetitions")
    results, started = [], time.perf_counter()
    try:
        for number in args.only or sorted(MODULES):
            t0 = time.perf_counter()
            for r in importlib.import_module(MODULES[number]).run(setup):
                results.append(r)
                ratio = "n/a" if r.ratio is None else f"{r.ratio:.3g}"
                print(f"[{r.number}] {r.title}: ratio {ratio} ({r.metric}), target {r.target}: {r.verdict}"
                      f"  [{time.perf_counter() - t0:.0f} s]", flush=True)
                for note in r.notes:
                    print(f"      {note}")
    finally:
        if not args.keep:
            shutil.rmtree(setup.work, ignore_errors=True)
    print()
    print(markdown_table(results))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.out:
        record = {"machine": info, "smoke": args.smoke, "model": setup.label, "batch": setup.batch,
                  "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "results": [r.to_dict() for r in results]}
        args.out.write_text(json.dumps(record, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
