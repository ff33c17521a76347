"""Stage `train`: one (variant, seed) run over the cached features.

The run record, read by `aggregate`, `plot` and `deck`:

* ``curve.csv``, one row per evaluation: ``step``, ``epoch``,
  ``samples_seen``, ``train_time_s`` (cumulative wall time spent training,
  evaluation excluded), ``train_loss`` (mean since the previous evaluation),
  ``val_loss``, ``val_auc``;
* ``summary.json``: the variant, seed, parameter counts, best validation AUC
  and loss, training time in total and to the best checkpoint, test metrics of
  the best checkpoint, step time, peak memory, device and versions.

Every variant of a seed sees the same batches in the same order: the order
depends on the seed only.
"""

from __future__ import annotations

import copy
import csv
import logging
import platform
import resource
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from .base_model import load_record
from .cli import StageError, atomic_file, json_arg, run_stage, write_json
from .config import Variant
from .features import load_features
from .model import apply_variant, build_classifier, count_parameters

log = logging.getLogger("gwlora.train")

CURVE_COLUMNS = ("step", "epoch", "samples_seen", "train_time_s", "train_loss", "val_loss", "val_auc")
# Keep a split's features on the GPU when smaller than this; otherwise stream pinned batches.
DEVICE_RESIDENT_BYTES = 2 * 1024**3


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


@torch.no_grad()
def evaluate(model, split: SplitOnDevice, batch_size: int) -> dict:
    model.eval()
    logits = []
    for start in range(0, split.n, batch_size):
        x, _ = split.batch(torch.arange(start, min(start + batch_size, split.n)))
        with autocast_for(split.device):
            logits.append(model(x).float())
    model.train()
    logits = torch.cat(logits).cpu()
    labels = split.y.cpu()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels).item()
    y = labels.numpy()
    scores = logits.numpy()
    auc = float(roc_auc_score(y, scores)) if 0 < y.sum() < len(y) else float("nan")
    acc = float(((scores > 0) == (y > 0.5)).mean())
    return {"loss": loss, "auc": auc, "accuracy": acc}


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
    """Train one variant with one seed; write curve.csv and summary.json into `out_dir`."""
    device = resolve_device(train_config["device"])
    if device.type == "cpu":
        torch.set_num_threads(train_config["threads"])
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)
    splits = {name: SplitOnDevice(path, device) for name, path in features.items()}
    train, val = splits["train"], splits["val"]
    meta = train.meta

    torch.manual_seed(seed)
    base = build_classifier(model_dir, len(meta["channels"]), meta["n_frames"], model_config)
    _, total_params = count_parameters(base)
    model = apply_variant(base, variant).to(device)
    model.train()
    trainable, _ = count_parameters(model)
    params = [p for p in model.parameters() if p.requires_grad]
    trainable_names = {name for name, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(params, lr=variant.lr, weight_decay=train_config["weight_decay"], fused=device.type == "cuda")
    loss_fn = torch.nn.BCEWithLogitsLoss()

    batch_size = train_config["batch_size"]
    steps_per_epoch = -(-train.n // batch_size)
    eval_every = train_config["eval_every_steps"] or steps_per_epoch
    patience = train_config["early_stopping_patience"]
    order = torch.Generator().manual_seed(seed)  # data order: a function of the seed only
    label = f"{variant.name} seed {seed}"
    log.info("%s: %d trainable of %d parameters on %s, %d steps/epoch", label, trainable, total_params, device, steps_per_epoch)

    curve: list[dict] = []
    best = {"val_loss": float("inf")}
    best_state = None
    stale = 0
    step = samples_seen = 0
    last_step = train_config["epochs"] * steps_per_epoch
    train_time = 0.0
    window_losses: list[torch.Tensor] = []
    stop = False
    bar = tqdm(total=last_step, desc=label, unit="step", mininterval=2.0)
    seg_start = time.perf_counter()
    for epoch in range(1, train_config["epochs"] + 1):
        for idx in torch.randperm(train.n, generator=order).split(batch_size):
            x, y = train.batch(idx)
            with autocast_for(device):
                loss = loss_fn(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            window_losses.append(loss.detach())
            step += 1
            samples_seen += len(idx)
            bar.update()
            if step % eval_every and step != last_step:
                continue
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_time += time.perf_counter() - seg_start
            losses = torch.stack(window_losses).float().cpu()
            bad = (~torch.isfinite(losses)).nonzero()
            if len(bad):
                bad_step = step - len(losses) + int(bad[0]) + 1
                raise StageError(f"{label}: non-finite training loss at step {bad_step} (lr {variant.lr})")
            window_losses.clear()
            metrics = evaluate(model, val, 2 * batch_size)
            row = {
                "step": step,
                "epoch": step / steps_per_epoch,
                "samples_seen": samples_seen,
                "train_time_s": train_time,
                "train_loss": float(losses.mean()),
                "val_loss": metrics["loss"],
                "val_auc": metrics["auc"],
            }
            curve.append(row)
            bar.set_postfix(val_loss=f"{metrics['loss']:.3f}", val_auc=f"{metrics['auc']:.3f}")
            log.info("%s step %d epoch %.2f: train loss %.4f, val loss %.4f, val AUC %.4f, %.1f s", label, step, row["epoch"], row["train_loss"], metrics["loss"], metrics["auc"], train_time)
            if metrics["loss"] < best["val_loss"]:
                best = dict(row)
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items() if k in trainable_names}
                stale = 0
            else:
                stale += 1
                if patience and stale >= patience:
                    log.info("%s: early stop after %d evaluations without a lower val loss", label, stale)
                    stop = True
            seg_start = time.perf_counter()
            if stop:
                break
        if stop:
            break
    bar.close()

    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    test = evaluate(model, splits["test"], 2 * batch_size) if "test" in splits else {}
    steps_run = step
    summary = {
        "variant": variant.name,
        "family": variant.family,
        "variant_config": variant.to_dict(),
        "seed": seed,
        "trainable_parameters": trainable,
        "total_parameters": total_params,
        "trainable_percent": 100.0 * trainable / total_params,
        "best_val_auc": max(r["val_auc"] for r in curve),
        "best_val_loss": best["val_loss"],
        "val_auc_at_best_loss": best["val_auc"],
        "best_step": best["step"],
        "time_to_best_s": best["train_time_s"],
        "train_time_s": train_time,
        "steps": steps_run,
        "epochs_run": steps_run / steps_per_epoch,
        "early_stopped": stop,
        "step_time_ms": 1000 * train_time / steps_run,
        "samples_per_s": samples_seen / train_time,
        "test_auc": test.get("auc"),
        "test_loss": test.get("loss"),
        "test_accuracy": test.get("accuracy"),
        "peak_memory_bytes": peak_memory_bytes(device),
        "device": str(device),
        "precision": "bf16-autocast" if device.type == "cuda" else "fp32",
        "batch_size": batch_size,
        "base_model": load_record(model_dir)["source"],
        "context": model_config["context"],
        "pooling": model_config["pooling"],
        "versions": versions(),
    }
    out_dir = Path(out_dir)
    write_curve(curve, out_dir / "curve.csv")
    write_json(out_dir / "summary.json", summary)
    return summary


def write_curve(rows: list[dict], path: Path) -> None:
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CURVE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _parser(p):
    p.add_argument("--train-features", required=True)
    p.add_argument("--val-features", required=True)
    p.add_argument("--test-features", help="test split features (final metrics of the best checkpoint)")
    p.add_argument("--model", required=True, help="base model directory")
    p.add_argument("--model-config", type=json_arg, required=True, help="validated `model` config section, as JSON")
    p.add_argument("--train-config", type=json_arg, required=True, help="validated `train` config section, as JSON")
    p.add_argument("--variant", type=json_arg, required=True, help="the variant to train, as JSON")
    p.add_argument("--seed", type=int, required=True)
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
    s = train_run(
        features=features,
        model_dir=args.model,
        model_config=args.model_config,
        train_config=train_config,
        variant=Variant.from_dict(args.variant),
        seed=args.seed,
        out_dir=args.out,
    )
    log.info(
        "%s seed %d: best val AUC %.4f, best val loss %.4f, test AUC %s, %.1f s training, %d trainable parameters",
        s["variant"], s["seed"], s["best_val_auc"], s["best_val_loss"],
        "n/a" if s["test_auc"] is None else f"{s['test_auc']:.4f}", s["train_time_s"], s["trainable_parameters"],
    )


def main(argv=None) -> int:
    return run_stage("train", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
