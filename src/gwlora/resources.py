"""Cluster resources of the costly rules, estimated from the config: wall time and memory.

A scheduler such as SLURM needs each job's wall time and memory up front. A
fixed request is either too small for the full study (the job is killed) or
far too large for the demo (it waits in the queue for nothing). These
functions derive both from what drives the cost: the encoder's size, the
length of its input, the number of windows and epochs. The workflow calls them
as ``resources:`` of the ``dataset``, ``features`` and ``train`` rules
(``workflow/rules/common.smk``); a profile's ``set-resources`` overrides them.

Every estimate is generous on purpose (a job killed at its limit costs more
than a longer request) and is multiplied by the attempt number, so a job that
Snakemake retries after a timeout or an out-of-memory kill asks for more. The
constants below are the documented defaults (see config/README.md, "Cluster
resources"); ``python -m gwlora.resources CONFIG`` (``gwlora-resources``)
prints them for a config:

* training compute: forward FLOPs per window
  ``channels * (2 * P * T + 4 * L * T**2 * d)`` for an encoder of ``P``
  parameters, ``L`` layers of width ``d`` and ``T`` positions (half the
  context's 100 frames per second: 1500 for 30 s, 100 for 2 s, the clip's
  for ``clip``; a run on the context axis gets its own context's); a
  training step costs three forward passes; validation runs at every
  evaluation, test once. A variant that trains on cached encoder outputs
  (:mod:`gwlora.encoder_cache`: ``frozen``, ``partial-top<k>``) pays, per
  training step and validation window, only for its top k layers
  (``channels * k * (2 * p * T + 4 * T**2 * d)``, ``p`` a layer's
  parameters; nothing for the frozen encoder's head), and the whole encoder
  once on the test split; its ``encoder_outputs`` jobs pay the forward pass
  of their split once. Throughput (:func:`flops_per_s`) on a GPU (any
  ``train.device`` but ``cpu``) :data:`GPU_FLOPS`, or :data:`GPU_FP32_FLOPS`
  with ``train.precision: fp32``; on a CPU, per thread,
  :data:`CPU_BF16_FLOPS_PER_THREAD` with ``train.precision: bf16`` and
  :data:`CPU_FLOPS_PER_THREAD` with ``fp32`` or ``auto``: ``auto`` decides on
  the machine that runs the job, which the machine that plans it cannot see
  (a cluster's nodes may lack the bf16 units its login node has), so its
  request is fp32's, the slower. Wall time = :data:`TRAIN_OVERHEAD_S` +
  :data:`SAFETY` x compute time.
* training memory (host RAM): the three splits' features, loaded whole
  (float32), the weights, gradients and Adam moments (16 bytes a parameter),
  activations when training on a CPU, plus :data:`BASE_MEM_MB` for Python,
  PyTorch and the CUDA libraries; times :data:`SAFETY`.
* data set: :data:`DATASET_WINDOWS_PER_S` windows a second (about a fifth of
  the measured simulation rate, for GWOSC reading and whitening), memory for
  the split's windows at 16 kHz (plus :data:`GWOSC_FILES_MB` for GWOSC).
* features: :data:`FEATURES_WINDOWS_PER_S` windows a second, memory for the
  split's features and strain.

The same estimates size the whole plan (:func:`plan_hours`): the Snakefile's
``onstart`` prints its training jobs and hours before the first job, and stops
a plan of more than :data:`LARGE_PLAN_TRAIN_JOBS` training jobs unless run
with ``--config confirm_large=1`` (:func:`confirm_plan`).
"""

from __future__ import annotations

import math
from pathlib import Path

from .cache_points import CACHED_SPLITS, MAX_CACHE_BYTES, cache_bytes, cached_top_layers, top_layers_of
from .cli import StageError, run_stage
from .constants import INJECTION_SOURCES, SPLITS, WHISPER_FULL_POSITIONS, WHISPER_N_MELS, WHISPER_SAMPLE_RATE
from .config import shifted_splits, split_source
from .encoder import clip_frames, context_frames, contexts, encoder_shape

# --- documented defaults ------------------------------------------------------
GPU_FLOPS = 2e13  # sustained FLOP/s of one training job on one GPU in bf16 autocast (a fraction of peak; not measured here)
GPU_FP32_FLOPS = 5e12  # the same in fp32 (train.precision: fp32), a quarter of bf16's (TF32 matmuls; not measured here)
# Sustained FLOP/s per CPU thread, by the forward-FLOP count below (training's backward counted as two forwards).
# Measured with the tiny.en study (docs/benchmarks.md, one thread, batch 16, clip context), whole runs with their
# validation passes, on an Intel Xeon with AMX: fp32 60-80 GFLOP/s, bf16 autocast 165-200 GFLOP/s (native bf16); an AMD
# EPYC's fp32 training step (full fine-tuning, 1,230 ms a batch of 16) gives the same 60. The constants keep a third below.
CPU_FLOPS_PER_THREAD = 4e10  # fp32
CPU_BF16_FLOPS_PER_THREAD = 1.1e11  # bf16 autocast on a CPU with native bf16 units (AMX or AVX512-BF16)
SAFETY = 2.0  # every estimate is doubled
TRAIN_OVERHEAD_S = 600  # start-up, model loading, checkpoints, latency measurement
STAGE_OVERHEAD_S = 300  # start-up of the dataset and features jobs
EVALUATE_RUN_OVERHEAD_S = 30  # per run scored by the evaluate job: model rebuilt, checkpoint verified and loaded (about 3 s measured)
DATASET_WINDOWS_PER_S = 20
FEATURES_WINDOWS_PER_S = 50
BASE_MEM_MB = 3072  # Python, PyTorch, transformers, the CUDA libraries
MIN_MEM_MB = 2048
MEM_STEP_MB = 1024  # requests are rounded up to whole GiB
MIN_RUNTIME_MIN = 10
GWOSC_FILES_MB = 2048  # GWOSC strain files held while a split is cut from them

def encoder_parameters(model: dict) -> int:
    """Approximate parameter count of the encoder: attention, feed-forward and the two input convolutions."""
    d, layers, ffn, mels = encoder_shape(model, assume_hub_size=True)
    return layers * (4 * d * d + 2 * d * ffn) + 3 * mels * d + 3 * d * d


def channels(data: dict) -> int:
    """Channels per window: one per detector for strain, one for audio sources."""
    return len(data["detectors"]) if data["source"] in INJECTION_SOURCES else 1


def positions(model: dict, data: dict, context: str | None = None) -> int:
    """Encoder positions per channel: the context's frames (`context`, else model.context's longest) halved by the strided convolution."""
    frames = max(context_frames(c, clip_frames(data["window_seconds"])) for c in ([context] if context else contexts(model)))
    return WHISPER_FULL_POSITIONS if frames >= 2 * WHISPER_FULL_POSITIONS else math.ceil(frames / 2)


def forward_flops(model: dict, data: dict, context: str | None = None) -> float:
    """FLOPs of one forward pass over one window (all its channels) at `context` (default: model.context's longest)."""
    d, layers, _, _ = encoder_shape(model, assume_hub_size=True)
    t = positions(model, data, context)
    return channels(data) * (2 * encoder_parameters(model) * t + 4 * layers * t * t * d)


def top_layer_flops(model: dict, data: dict, context: str | None, top_layers: int) -> float:
    """FLOPs of one forward pass of the top `top_layers` encoder layers over one window (0: the head alone, counted as nothing)."""
    d, _, ffn, _ = encoder_shape(model, assume_hub_size=True)
    t = positions(model, data, context)
    return channels(data) * top_layers * (2 * (4 * d * d + 2 * d * ffn) * t + 4 * t * t * d)


def planned_cache_bytes(config: dict, windows: int, context: str | None, top_layers: int) -> int:
    """float32 bytes of one split's cached encoder outputs of `windows` windows (gwlora.cache_points.cache_bytes)."""
    d, _, _, _ = encoder_shape(config["model"], assume_hub_size=True)
    return cache_bytes(top_layers, windows, channels(config["data"]), positions(config["model"], config["data"], context), d)


def trains_cached(config: dict, variant, context: str | None) -> int | None:
    """The trainable top layers of a variant that will train on cached encoder outputs, or None (the whole encoder every step).

    None too where its cache would exceed :data:`MAX_CACHE_BYTES` (the stage refuses it); an encoder
    with dropout, which the stage refuses too, is not known before it is loaded (Whisper's has none).
    """
    top = cached_top_layers(config["train"], variant)
    if top is None or planned_cache_bytes(config, max(config["data"]["splits"][s] for s in CACHED_SPLITS), context, top) > MAX_CACHE_BYTES:
        return None
    return top


def run_context(context: str | None, variant) -> str | None:
    """The context a run trains at: its variant's (on the context axis), else `context` (None: model.context's longest)."""
    return variant.context if variant is not None and variant.context else context


def evaluations(train: dict, n_train: int) -> int:
    """Validation passes of one run: once per epoch, or every `eval_every_steps` steps."""
    epochs, every = train["epochs"], train["eval_every_steps"]
    if every <= 0:
        return epochs
    return epochs * max(1, math.ceil(math.ceil(n_train / train["batch_size"]) / every))


def flops_per_s(train: dict) -> float:
    """The sustained FLOP/s a job of the `train` section is planned at, by its device, precision and threads."""
    if train["device"] != "cpu":
        return GPU_FP32_FLOPS if train["precision"] == "fp32" else GPU_FLOPS  # auto is bf16 on CUDA
    # auto: the node's processor decides, unknown here; fp32's rate is the slower and so the safe request
    return (CPU_BF16_FLOPS_PER_THREAD if train["precision"] == "bf16" else CPU_FLOPS_PER_THREAD) * train["threads"]


def planned_rate(train: dict) -> str:
    """The line that says at which rate, and why, the training and scoring jobs of the `train` section are planned."""
    where = "a GPU" if train["device"] != "cpu" else f"{train['threads']} CPU thread{'s' if train['threads'] != 1 else ''}"
    line = f"(models planned at {flops_per_s(train):.2g} FLOP/s on {where}, train.precision {train['precision']}"
    if train["device"] == "cpu" and train["precision"] == "auto":
        line += ": fp32's rate, since auto decides on the machine that runs the job; set bf16 where every node has AMX or AVX512-BF16"
    return line + ")"


def _minutes(seconds: float, attempt: int) -> int:
    return max(MIN_RUNTIME_MIN, math.ceil(seconds / 60)) * attempt


def _mb(nbytes: float, attempt: int) -> int:
    mb = max(MIN_MEM_MB, BASE_MEM_MB + SAFETY * nbytes / 2**20)
    return math.ceil(mb / MEM_STEP_MB) * MEM_STEP_MB * attempt


def train_runtime(config: dict, attempt: int = 1, context: str | None = None, variant=None) -> int:
    """Wall time in minutes of one training job (one variant, one seed), at its `context` (default: model.context's longest).

    `variant` (a :class:`gwlora.variants.Variant`, or None: one that runs the whole encoder) gives the run's context
    and whether it trains on cached encoder outputs.
    """
    data, model, train = config["data"], config["model"], config["train"]
    splits, context = data["splits"], run_context(context, variant)
    fwd = forward_flops(model, data, context)
    top = trains_cached(config, variant, context)
    trained = fwd if top is None else top_layer_flops(model, data, context, top)
    flops = trained * (3 * splits["train"] * train["epochs"] + splits["val"] * evaluations(train, splits["train"])) + fwd * splits["test"]
    return _minutes(TRAIN_OVERHEAD_S + SAFETY * flops / flops_per_s(train), attempt)


def train_mem_mb(config: dict, attempt: int = 1, context: str | None = None, variant=None) -> int:
    """Host memory of one training job at its `context`, in Snakemake's mem_mb (counted in MiB, 2**20 bytes, as SLURM's --mem).

    A `variant` that trains on cached encoder outputs holds its train and val caches too.
    """
    data, model, train = config["data"], config["model"], config["train"]
    context = run_context(context, variant)
    top = trains_cached(config, variant, context)
    cached = 0 if top is None else sum(planned_cache_bytes(config, data["splits"][s], context, top) for s in CACHED_SPLITS)
    windows = sum(data["splits"].values())
    features = 4 * windows * channels(data) * WHISPER_N_MELS * clip_frames(data["window_seconds"])
    weights = 16 * encoder_parameters(model)
    activations = 0
    if train["device"] == "cpu":
        d, layers, _, _ = encoder_shape(model, assume_hub_size=True)
        activations = 4 * 16 * train["batch_size"] * channels(data) * positions(model, data, context) * d * layers
    return _mb(features + weights + activations + cached, attempt)


def encoder_outputs_runtime(config: dict, split: str, context: str, attempt: int = 1) -> int:
    """Wall time in minutes of one encoder_outputs job: the encoder's forward pass over one split, once."""
    data, train = config["data"], config["train"]
    return _minutes(STAGE_OVERHEAD_S + SAFETY * forward_flops(config["model"], data, context) * data["splits"][split] / flops_per_s(train), attempt)


def encoder_outputs_mem_mb(config: dict, split: str, context: str, point: str, attempt: int = 1) -> int:
    """Host memory of one encoder_outputs job: the split's features, the encoder's weights and the cache it writes."""
    data, windows = config["data"], config["data"]["splits"][split]
    features = 4 * windows * channels(data) * WHISPER_N_MELS * clip_frames(data["window_seconds"])
    return _mb(features + 4 * encoder_parameters(config["model"]) + planned_cache_bytes(config, windows, context, top_layers_of(point)), attempt)


def cached_variants(config: dict) -> list[tuple]:
    """(variant, context, cache point) of each variant of a validated config that trains on cached encoder outputs."""
    from .cache_points import cache_point
    from .config import expand_variants, run_model_config

    found = []
    for variant in expand_variants(config["train"], config["model"]).values():
        context = run_model_config(config["model"], variant)["context"]
        top = trains_cached(config, variant, context)
        if top is not None:
            found.append((variant, context, cache_point(top)))
    return found


def cache_jobs(config: dict) -> list[tuple[str, str]]:
    """The (context, cache point) of each encoder_outputs job of a config, shared by every lr and seed; each runs once per cached split."""
    return list(dict.fromkeys((context, point) for _, context, point in cached_variants(config)))


def _strain_bytes(data: dict, windows: int) -> float:
    """One split's windows in memory, float32 at 16 kHz, twice (the arrays and the data set built from them).

    GWOSC adds :data:`GWOSC_FILES_MB` for the strain files being read and whitened."""
    seconds = data["window_seconds"]
    extra = GWOSC_FILES_MB * 2**20 if data["source"] == "gwosc" else 0
    return 2 * 4 * windows * channels(data) * seconds * WHISPER_SAMPLE_RATE + extra


def evaluate_runtime(config: dict, split: str, attempt: int = 1) -> int:
    """Wall time in minutes of scoring every run (variants x lrs x seeds) on one shifted test set (``shift-<name>``)."""
    from .config import expand_variants

    data, model, train = config["data"], config["model"], config["train"]
    _, windows = _split_windows(config, split)
    runs = len(expand_variants(train, model)) * len(train["seeds"])
    rate = flops_per_s(train)
    return _minutes(STAGE_OVERHEAD_S + runs * (EVALUATE_RUN_OVERHEAD_S + SAFETY * forward_flops(model, data) * windows / rate), attempt)


def evaluate_mem_mb(config: dict, split: str, attempt: int = 1) -> int:
    """Host memory of the evaluate job: one run's model and the test set's features at a time."""
    data, model = config["data"], config["model"]
    _, windows = _split_windows(config, split)
    return _mb(4 * windows * channels(data) * WHISPER_N_MELS * clip_frames(data["window_seconds"]) + 8 * encoder_parameters(model), attempt)


def _split_windows(config: dict, split: str) -> tuple[dict, int]:
    """(data section, windows) of a split or a shifted test set (``shift-<name>``)."""
    data, _, built = split_source(config, split)
    return data, data["splits"][built]


def dataset_runtime(config: dict, split: str, attempt: int = 1) -> int:
    """Wall time in minutes of building one split (or shifted test set)."""
    _, windows = _split_windows(config, split)
    return _minutes(STAGE_OVERHEAD_S + SAFETY * windows / DATASET_WINDOWS_PER_S, attempt)


def dataset_mem_mb(config: dict, split: str, attempt: int = 1) -> int:
    return _mb(_strain_bytes(*_split_windows(config, split)), attempt)


def features_runtime(config: dict, split: str, attempt: int = 1) -> int:
    """Wall time in minutes of the log-mel features of one split (or shifted test set)."""
    _, windows = _split_windows(config, split)
    return _minutes(STAGE_OVERHEAD_S + SAFETY * windows / FEATURES_WINDOWS_PER_S, attempt)


def features_mem_mb(config: dict, split: str, attempt: int = 1) -> int:
    data, windows = _split_windows(config, split)
    return _mb(4 * windows * channels(data) * WHISPER_N_MELS * clip_frames(data["window_seconds"]) + _strain_bytes(data, windows) / 2, attempt)


# A config that expands to more training jobs than this starts only with `--config confirm_large=1` (the Snakefile's onstart)
LARGE_PLAN_TRAIN_JOBS = 500


def plan_hours(config: dict) -> dict:
    """The training jobs of a validated config and the hours of wall time the first attempts of all its costly jobs ask for.

    ``{"train_jobs", "configurations", "seeds", "gpu_hours", "cpu_hours"}`` (configurations: variants x contexts x lrs,
    config.expand_variants): training and scoring count as GPU hours
    unless ``train.device`` is cpu; data sets and features are always CPU hours.
    """
    from .config import expand_variants

    variants = expand_variants(config["train"], config["model"])
    seeds = len(config["train"]["seeds"])
    model_minutes = seeds * sum(train_runtime(config, variant=v) for v in variants.values())
    model_minutes += sum(evaluate_runtime(config, split) for split in shifted_splits(config))
    model_minutes += sum(encoder_outputs_runtime(config, s, context) for context, _ in cache_jobs(config) for s in CACHED_SPLITS)
    data_minutes = sum(dataset_runtime(config, s) + features_runtime(config, s) for s in [*SPLITS, *shifted_splits(config)])
    on_gpu = config["train"]["device"] != "cpu"
    return {
        "train_jobs": len(variants) * seeds, "configurations": len(variants), "seeds": seeds,
        "gpu_hours": model_minutes / 60 if on_gpu else 0.0,
        "cpu_hours": (data_minutes + (0 if on_gpu else model_minutes)) / 60,
    }


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def confirm_plan(config: dict, confirmed: bool) -> str:
    """The line the workflow prints before it starts: its training jobs and hours; a StageError above LARGE_PLAN_TRAIN_JOBS unless `confirmed`."""
    plan = plan_hours(config)
    hours = f"{plan['gpu_hours']:,.0f} GPU hours and " if plan["gpu_hours"] else ""
    line = (
        f"{config['experiment']}: {_count(plan['train_jobs'], 'training job')} "
        f"({_count(plan['configurations'], 'training configuration')} x {_count(plan['seeds'], 'seed')}), "
        f"about {hours}{plan['cpu_hours']:,.0f} CPU hours of jobs (first-attempt wall-time requests, as gwlora-resources prints them)"
    )
    if plan["train_jobs"] > LARGE_PLAN_TRAIN_JOBS and not confirmed:
        raise StageError(
            f"{line}: more than the {LARGE_PLAN_TRAIN_JOBS} training jobs that start unasked; "
            "check the config's variants, lrs, contexts and seeds, then run again with --config confirm_large=1"
        )
    return line


SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def cached_train_rows(config: dict) -> list[dict]:
    """One estimate row per variant that trains on cached encoder outputs (each of its lrs and seeds asks the same)."""
    rows = {}
    for variant, _, point in cached_variants(config):
        rows.setdefault(variant.name, {"job": f"train {variant.name} (each lr and seed, on cached {point})",
                                       "minutes": train_runtime(config, variant=variant), "mem_mb": train_mem_mb(config, variant=variant)})
    return list(rows.values())


def estimates(config: dict) -> list[dict]:
    """Wall time (minutes) and memory (mem_mb, in MiB) of every costly job of a validated config, first attempt."""
    listed = isinstance(config["model"]["context"], list)
    rows = [{"job": f"train (each variant and seed{f', context {c}' if listed else ''})", "minutes": train_runtime(config, context=c),
             "mem_mb": train_mem_mb(config, context=c)} for c in contexts(config["model"])]
    rows += cached_train_rows(config)
    for context, point in cache_jobs(config):
        rows += [{"job": f"encoder_outputs {context} {point} {split}", "minutes": encoder_outputs_runtime(config, split, context),
                  "mem_mb": encoder_outputs_mem_mb(config, split, context, point)} for split in CACHED_SPLITS]
    for split in [*SPLITS, *shifted_splits(config)]:
        rows.append({"job": f"dataset {split}", "minutes": dataset_runtime(config, split), "mem_mb": dataset_mem_mb(config, split)})
        rows.append({"job": f"features {split}", "minutes": features_runtime(config, split), "mem_mb": features_mem_mb(config, split)})
    for split in shifted_splits(config):
        rows.append({"job": f"evaluate {split} (every run)", "minutes": evaluate_runtime(config, split), "mem_mb": evaluate_mem_mb(config, split)})
    return rows


def _parser(p):
    p.add_argument("config", help="a workflow config file (YAML), validated as the Snakefile does")
    p.add_argument("--schema", default=str(SCHEMA), help="the config schema (default: this checkout's)")


def _run(args):
    """Print the wall time and memory the workflow asks a cluster for, per job, for a config."""
    from .config import ConfigError, load_and_validate

    try:
        config = load_and_validate(args.config, args.schema)
    except ConfigError as exc:
        raise StageError(str(exc)) from None
    rows = estimates(config)
    width = max(32, *(len(row["job"]) for row in rows))
    print(f"{'job':<{width}} {'minutes':>8} {'memory (MiB)':>12}")
    for row in rows:
        print(f"{row['job']:<{width}} {row['minutes']:>8} {row['mem_mb']:>12}")
    print("(a retried job asks for its attempt number times as much; a profile's set-resources overrides these)")
    print(planned_rate(config["train"]))
    print(confirm_plan(config, confirmed=True))


def main(argv=None) -> int:
    return run_stage("resources", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
