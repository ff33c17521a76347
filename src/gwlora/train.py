"""Stage `train`: one (variant, seed) run over the cached features, read top to bottom as its loop runs.

:func:`train_run` prepares the run (:func:`prepare_run`: device, features,
seeded model with the variant applied, optimizer and schedule), resumes it from
its saved state if there is a sound one (:mod:`gwlora.run_state`), compiles it
(:func:`compile_run`), and loops over epochs and batches (:func:`train_step`),
evaluating, keeping the best checkpoint and saving the run state every
``train.eval_every_steps`` (:func:`evaluate_and_checkpoint`); at the end
:func:`summarise` scores the best checkpoint on the test split
(:func:`gwlora.scoring.score_checkpoint`), times inference
(:mod:`gwlora.measure`) and writes the run record (:mod:`gwlora.records`).

The run folder: ``curve.csv``, ``summary.json`` and ``predictions.csv``
(:mod:`gwlora.records`); ``best/``, the best checkpoint (lowest val loss) with
its checksums (:mod:`gwlora.scoring`); ``tensorboard/``, the same curve as
TensorBoard event files; ``checkpoint/last.pt`` while running, the state a
killed run resumes from (:mod:`gwlora.run_state`).

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

import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn.functional import binary_cross_entropy_with_logits as bce
from tqdm import tqdm

from .base_model import load_record
from .encoder_cache import CacheUse, attach as attach_encoder_cache
from .cli import StageError, json_arg, run_stage
from .families import StepHook, family
from .variants import Variant
from .measure import dir_bytes, git_commit, hardware, inference_timings, peak_memory_bytes, seconds_since, versions
from .methods import sequence_cost
from .model import count_parameters
from .precision import Precision, RunPrecision, autocast
from .records import CURVE_FILE, PREDICTIONS_FILE, Costs, CurveRow, Identity, Learning, Provenance, Quality, Rebuild, Settings, Summary, write_curve
from .run_state import RUN_STATE, Checkpointed, RunState, resume_or_start, run_fingerprint, save_run_state
from .scoring import (BEST_DIR, IMPROVING_WINDOW, SplitOnDevice, build_model, chance_loss, evaluate, learning_problems, load_best, padded,
                      resolve_device, save_best, score_checkpoint, still_improving)

log = logging.getLogger("gwlora.train")

# train.compile auto on CUDA: CUDA graphs (reduce-overhead) up to this batch, where a step is bound by the host's kernel
# launches (docs/benchmarks.md: the same ~40 ms at batch 8 and 64); torch.compile's default mode above it.
# The config schema's description of train.compile states it too (tests/test_train.py holds them together).
AUTO_GRAPH_MAX_BATCH = 128
STATIC_SHAPES = "pad"  # how compiled runs keep one batch shape: the last batch padded (weight 0), none dropped



def is_head(name: str) -> bool:
    """Whether a parameter belongs to the freshly initialised head (peft's copy of it included)."""
    return "head" in name.split(".")


def make_optimizer(model, lr: float, weight_decay: float, head_lr_multiplier: float = 1.0) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, one fused kernel for all of them (CPU and CUDA).

    ``fused=True`` has a CPU kernel since torch 2.4 (this project needs 2.13), for fp32 master weights as
    here; measured against ``foreach`` in docs/benchmarks.md ("fp32 against bf16").

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
def train_step(model, optimizer, loss_fn, x: torch.Tensor, y: torch.Tensor, precision: Precision,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """One optimisation step on (x, y), the loss returned unsynchronised; `weight` marks a padded batch's real windows."""
    optimizer.zero_grad(set_to_none=True)  # first: a compiled forward (CUDA graphs) may reuse the old gradients' memory
    with autocast(precision, x.device):  # bf16 matmuls where asked; the weights, optimiser and loss stay fp32
        logits = model(x).float()
        loss = loss_fn(logits, y) if weight is None else (bce(logits, y, reduction="none") * weight).sum() / weight.sum()
    loss.backward()
    optimizer.step()
    return loss.detach()
# deck: end


def real_windows(n: int, size: int, device: torch.device) -> torch.Tensor:
    """Weights of a padded batch: 1 for its first `n` windows, 0 for the padding (made on the device, no copy)."""
    return (torch.arange(size, device=device) < n).float()


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
    step_hook: StepHook | None = None  # the family's call after each optimiser step (AdaLoRA's rank allocation)
    precision_state: RunPrecision | None = None  # train.precision resolved on this device, or as the resumed run recorded it
    cache: CacheUse | None = None  # cached encoder outputs to train and validate on (gwlora.encoder_cache), set once the precision is known

    @property
    def forward(self):
        """What training and evaluation call: the compiled model, else the model itself (from the cache point up, when cached)."""
        return self.fit_model if self.compiled is None else self.compiled

    @property
    def fit_model(self) -> torch.nn.Module:
        """What trains and validates: the classifier above its frozen prefix on cached outputs, else the whole classifier."""
        return self.cache.module if self.cache is not None and self.cache.used else self.model

    def fit_split(self, name: str) -> SplitOnDevice:
        """The train or val split as :attr:`fit_model` reads it: cached encoder outputs, else the features."""
        return self.cache.splits[name] if self.cache is not None and self.cache.used else self.splits[name]

    @property
    def checkpointed(self) -> Checkpointed:
        """What the run state saves and restores; a method with state of its own (a rank allocator) adds it to ``parts``."""
        return Checkpointed(path=self.out_dir / RUN_STATE, fingerprint=self.fingerprint, model=self.model,
                            parts={"optimizer": self.optimizer, "schedule": self.schedule, "precision": self.precision_state,
                                   **({"step_hook": self.step_hook} if self.step_hook is not None else {})},
                            device=self.device)

    @property
    def precision(self) -> Precision:
        return self.precision_state.current

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


def prepare_run(features, model_dir, model_config: dict, train_config: dict, variant: Variant, seed: int, out_dir) -> Run:
    """Device, features on it, the seeded model with the variant applied, and its optimizer."""
    device = resolve_device(train_config["device"])
    if device.type == "cpu":
        # the rule's `threads:` (train.threads, --threads): the intra-op pool every matmul and attention kernel uses.
        # The inter-op pool is left alone: eager training forks no inter-op work, and it can only be sized before any.
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
    run.step_hook = family(variant.family).step_hook(run.model, variant, run.last_step)
    run.precision_state = RunPrecision(train_config["precision"], device)
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
        forward = compile_model(run.fit_model, mode)
        train, val, loss_fn = run.fit_split("train"), run.fit_split("val"), torch.nn.BCEWithLogitsLoss()
        x, y = train.batch(torch.arange(run.batch_size) % train.n)
        x_eval, _ = val.batch(torch.arange(run.eval_batch_size) % val.n)
        with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
            for _ in range(3 if mode == "reduce-overhead" else 1):
                with autocast(run.precision, run.device):
                    loss = loss_fn(forward(x).float(), y)
                loss.backward()
            run.optimizer.zero_grad(set_to_none=True)
            run.model.eval()
            with torch.no_grad(), autocast(run.precision, run.device):
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
    encoder_outputs: dict[str, str | Path] | None = None,
) -> dict:
    """Train one variant with one seed; write curve.csv, summary.json, predictions.csv, best/ and tensorboard/ into `out_dir`.

    `encoder_outputs`: the encoder_outputs stage's train and val caches for a
    variant with a frozen prefix (:mod:`gwlora.encoder_cache`); without them,
    such a variant computes its cache itself (unless ``train.encoder_cache`` is off).

    The run state is saved at every evaluation; a run that was killed resumes
    from it when started again with the same settings, and ends exactly as an
    uninterrupted run would. Returns summary.json's record.
    """
    run = prepare_run(features, model_dir, model_config, train_config, variant, seed, out_dir)
    order = torch.Generator().manual_seed(seed)  # data order: a function of the seed only
    state = resume_or_start(run.checkpointed, order, run.label)
    log.info("%s: computes in %s (%s)", run.label, run.precision.name, run.precision.reason)
    run.cache = attach_encoder_cache(run.model, variant, run.splits, model_config, train_config, run.precision, encoder_outputs, features, run.label)
    compile_run(run, state)
    if state.step == 0:
        state.initial_val_loss = evaluate(run.fit_model, run.fit_split("val"), run.eval_batch_size, run.precision, forward=run.compiled)["loss"]
    log.info("%s: %d trainable of %d parameters on %s, %d steps/epoch", run.label, run.trainable_parameters, run.total_parameters, run.device, run.steps_per_epoch)
    # imported here, so that gwlora.train imports without tensorboard (e.g. on a bare GPU machine)
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run.out_dir / "tensorboard"), purge_step=state.step + 1 if state.step else None)
    loss_fn, train, losses = torch.nn.BCEWithLogitsLoss(), run.fit_split("train"), []
    bar = tqdm(total=run.last_step, initial=state.step, desc=run.label, unit="step", mininterval=2.0)
    segment_start = time.perf_counter()
    while state.epoch <= train_config["epochs"] and not state.stopped:
        order.set_state(state.epoch_order_state)
        batches = torch.randperm(train.n, generator=order).split(run.batch_size)
        for idx in batches[state.batches_done :]:
            if run.compiled is not None and len(idx) < run.batch_size:  # static shapes: pad the epoch's last batch
                x, y = train.batch(padded(idx, run.batch_size))
                losses.append(train_step(run.forward, run.optimizer, loss_fn, x, y, run.precision, real_windows(len(idx), run.batch_size, run.device)))
            else:
                x, y = train.batch(idx)
                losses.append(train_step(run.forward, run.optimizer, loss_fn, x, y, run.precision))
            run.schedule.step()
            state.advance(len(idx), len(batches), order)
            if run.step_hook is not None:  # after the step, before the next zero_grad
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
    return summary.to_json()


def evaluate_and_checkpoint(run: Run, state: RunState, losses: list[torch.Tensor], writer, bar) -> None:
    """Validate, log a curve row, keep the best weights, decide on early stopping, and save the run state."""
    losses_t = torch.stack(losses).float().cpu()
    bad = (~torch.isfinite(losses_t)).nonzero()
    if len(bad):
        bad_step = state.step - len(losses_t) + int(bad[0]) + 1
        raise StageError(f"{run.label}: non-finite training loss at step {bad_step} (lr {run.variant.lr})")
    metrics = evaluate(run.fit_model, run.fit_split("val"), run.eval_batch_size, run.precision, forward=run.compiled)
    row = CurveRow(step=state.step, epoch=state.step / run.steps_per_epoch, samples_seen=state.samples_seen, train_time_s=state.train_time,
                   train_loss=float(losses_t.mean()), val_loss=metrics["loss"], val_auc=metrics["auc"], val_accuracy=metrics["accuracy"],
                   val_brier=metrics["brier"])
    state.curve.append(asdict(row))
    for key in ("train_loss", "val_loss", "val_auc"):
        writer.add_scalar(key.replace("_", "/", 1), getattr(row, key), state.step)
    writer.add_scalar("time/train_s", row.train_time_s, state.step)
    bar.set_postfix(val_loss=f"{row.val_loss:.3f}", val_auc=f"{row.val_auc:.3f}")
    log.info("%s step %d epoch %.2f: train loss %.4f, val loss %.4f, val AUC %.4f, %.1f s", run.label, state.step, row.epoch, row.train_loss, row.val_loss, row.val_auc, state.train_time)
    if row.val_loss < state.best["val_loss"]:
        state.best, state.stale = asdict(row), 0
        save_best(run.model, run.variant, run.out_dir / BEST_DIR)
    else:
        state.stale += 1
        patience = run.train_config["early_stopping_patience"]
        if patience and state.stale >= patience:
            log.info("%s: early stop after %d evaluations without a lower val loss", run.label, state.stale)
            state.stopped = True
    save_run_state(run.checkpointed, state)


def summarise(run: Run, state: RunState) -> Summary:
    """Score the best checkpoint on the test split, time inference, and write curve.csv, predictions.csv and summary.json."""
    test = {}
    if "test" in run.splits:
        test = score_checkpoint(run.model, run.variant, run.out_dir / BEST_DIR, run.splits["test"], run.eval_batch_size,
                                run.train_config["tpr_at_fpr"], run.out_dir / PREDICTIONS_FILE, run.precision)
    else:
        load_best(run.model, run.variant, run.out_dir / BEST_DIR)
    summary = Summary(
        identity=Identity(variant=run.variant.name, run=run.variant.run, family=run.variant.family, config_key=run.variant.config_key,
                          variant_config=run.variant.to_dict(), seed=run.seed, trainable_parameters=run.trainable_parameters,
                          total_parameters=run.total_parameters, trainable_percent=100.0 * run.trainable_parameters / run.total_parameters),
        quality=quality_of(state.best, test, run.train_config["tpr_at_fpr"]),
        learning=learning_of(run, state, test.get("one_class")),
        costs=costs_of(run, state),
        settings=settings_of(run),
        rebuild=Rebuild(model_config=run.model_config, base_model_dir=str(run.model_dir), eval_batch_size=run.eval_batch_size,
                        input={"channels": list(run.splits["train"].meta["channels"]), "n_frames": run.splits["train"].meta["n_frames"]}),
        provenance=Provenance(versions=versions(), hardware=hardware(run.device), git_commit=git_commit()),
    )
    write_curve(state.curve, run.out_dir / CURVE_FILE)
    summary.write(run.out_dir)
    return summary


def quality_of(best: dict, test: dict, tpr_fpr: float) -> Quality:
    """The best checkpoint's validation row (`best`, a curve row) and its test scores (empty without a test split)."""
    return Quality(best_val_loss=best["val_loss"], val_auc=best["val_auc"], best_step=best["step"], val_accuracy=best["val_accuracy"],
                   val_brier=best["val_brier"], test_auc=test.get("auc"), test_loss=test.get("loss"), test_accuracy=test.get("accuracy"),
                   test_tpr_at_fpr=test.get("tpr_at_fpr"), test_brier=test.get("brier"), test_one_class=test.get("one_class"), tpr_fpr=tpr_fpr)


def learning_of(run: Run, state: RunState, one_class: bool | None) -> Learning:
    """Whether the run learned (:func:`gwlora.scoring.learning_problems`), each problem logged."""
    chance = chance_loss(run.splits["val"].y.cpu().numpy())
    problems = learning_problems(state.initial_val_loss, chance, state.best["val_loss"], one_class)
    for problem in problems.values():
        log.warning("%s did not learn: %s", run.label, problem)
    improving = still_improving([row["val_loss"] for row in state.curve], stopped_early(run, state))
    if improving:
        log.warning("%s: still improving when it ended (its lowest val loss at one of its last %d evaluations)", run.label, IMPROVING_WINDOW)
    return Learning(initial_val_loss=state.initial_val_loss, chance_val_loss=chance, did_not_learn=bool(problems),
                    val_loss_flat="val_loss_flat" in problems, did_not_learn_because="; ".join(problems.values()),
                    still_improving=improving)


def stopped_early(run: Run, state: RunState) -> bool:
    """Whether patience ended the run before its planned steps (a stop decided at the last evaluation is no early stop)."""
    return state.stopped and state.step < run.last_step


def costs_of(run: Run, state: RunState) -> Costs:
    """Training time and throughput, memory, checkpoint size, and inference latency at the eval batch and at batch 1."""
    val = run.splits["val"]
    x, _ = val.batch(torch.arange(min(run.eval_batch_size, val.n)))
    reps = run.train_config["latency_batches"]
    classifier = run.model.get_base_model() if hasattr(run.model, "get_base_model") else run.model
    latency, spread = inference_timings(run.model, run.variant, x, reps, run.precision)
    latency_b1, spread_b1 = inference_timings(run.model, run.variant, x[:1], reps, run.precision)
    return Costs(
        time_to_best_s=state.best["train_time_s"], train_time_s=state.train_time, compile_time_s=state.compile_time, steps=state.step,
        epochs_run=state.step / run.steps_per_epoch, early_stopped=stopped_early(run, state), step_time_ms=1000 * state.train_time / state.step,
        samples_per_s=state.samples_seen / state.train_time, checkpoint_bytes=dir_bytes(run.out_dir / BEST_DIR),
        latency_ms=latency, latency_batch=int(x.shape[0]), latency_ms_batch1=latency_b1,
        sequence=sequence_cost(run.variant, run.model_config["context"], classifier.clip_positions, classifier.encoder.embed_positions.num_embeddings),
        peak_memory_bytes=peak_memory_bytes(run.device), latency_quartiles_ms={"eval": spread, "batch1": spread_b1},
    )


def settings_of(run: Run) -> Settings:
    """The device, precision, compilation, batch, learning rates, schedule and model the run trained with."""
    head = run.optimizer.param_groups[-1]
    schedule = run.train_config["schedule"]
    return Settings(
        device=str(run.device), precision=run.precision.name, precision_reason=run.precision.reason,
        compile={"setting": run.train_config["compile"], "mode": run.compile_mode, "fallback": run.compile_fallback,
                 "static_shapes": STATIC_SHAPES if run.compile_mode != "off" else None},
        batch_size=run.batch_size, lr=run.variant.lr, head_lr=head["initial_lr"] if head["name"] == "head" else None,
        schedule={**schedule, "warmup_steps": warmup_steps(schedule, run.last_step), "total_steps": run.last_step},
        base_model=load_record(run.model_dir)["source"], context=run.model_config["context"], pooling=run.model_config["pooling"],
        encoder_cache=run.cache.record,
    )
def _parser(p):
    p.add_argument("--train-features", required=True, help="train split features (the features stage's directory)")
    p.add_argument("--val-features", required=True, help="val split features (evaluations and the best checkpoint)")
    p.add_argument("--test-features", help="test split features (final metrics of the best checkpoint)")
    p.add_argument("--train-encoder-outputs", help="train split's cached encoder outputs (the encoder_outputs stage), for frozen and partial")
    p.add_argument("--val-encoder-outputs", help="val split's cached encoder outputs, with --train-encoder-outputs")
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
        encoder_outputs={"train": args.train_encoder_outputs, "val": args.val_encoder_outputs} if args.train_encoder_outputs else None,
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
