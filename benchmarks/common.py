"""What every comparison shares: the setup (device, model, data), A/B timing, and the result record.

Timing is always side by side: the contenders' repetitions alternate
(A B A B ...) after warm-up, each repetition times a few steps and waits for
the device, and the figure is the median over repetitions. A ratio measured
this way survives a machine shared with other jobs far better than two
separate runs would.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from gwlora.variants import Variant
from gwlora.constants import WHISPER_HOP_LENGTH, WHISPER_N_MELS, WHISPER_SAMPLE_RATE
from gwlora.features import clip_extractor, extract, write_features
from gwlora.families import apply_variant
from gwlora.model import build_classifier

N_CHANNELS = 2  # H1, L1
SEED_HEAD = [1024, 512, 256]  # the original study's MLP head (SEED_: that study, not a random seed)
LORA_R8 = Variant(name="lora-r8", family="lora", config_key="lora", lr=3e-4, params={
    "rank": 8, "alpha": 8.0, "target_modules": ["q_proj", "v_proj"], "dropout": 0.0, "rslora": False, "dora": False})
FULL = Variant(name="full", family="full", config_key="full", lr=5e-5)
OURS_MODEL = {"context": "clip", "pooling": "mean", "head_hidden": SEED_HEAD}  # config/tiny-en.yaml's model section


@dataclass
class Setup:
    """The device, base model and data every comparison of one run uses."""

    device: torch.device
    model_dir: Path  # a Hugging Face Whisper directory (weights, config, feature extractor)
    batch: int  # training batch (windows); each window is N_CHANNELS encoder passes
    reps: int  # timed repetitions per contender
    steps: int  # steps per repetition for cheap contenders
    heavy_steps: int  # steps per repetition for 30 s contenders
    strain: np.ndarray  # [N, C, samples] float32, 16 kHz
    labels: np.ndarray  # [N] int64
    work: Path  # scratch directory
    smoke: bool = False
    label: str = ""  # what the model is, for the report
    _features_dir: Path | None = None

    @property
    def n_samples(self) -> int:
        return self.strain.shape[-1]

    def features_dir(self) -> Path:
        """The strain's clip log-mels, written in the features stage's cache format (once)."""
        if self._features_dir is None:
            out = self.work / "features"
            feats = extract(self.strain, clip_extractor(self.model_dir, self.n_samples))
            write_features(out, feats, self.labels, np.zeros(len(self.labels)), split="bench",
                           channels=["H1", "L1"][: feats.shape[1]], sample_rate=WHISPER_SAMPLE_RATE)
            self._features_dir = out
        return self._features_dir

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def synthetic_strain(n: int, seconds: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Whitened-strain-like windows (unit Gaussian) and balanced labels: cost does not depend on content."""
    rng = np.random.default_rng(seed)
    strain = rng.standard_normal((n, N_CHANNELS, int(seconds * WHISPER_SAMPLE_RATE)), dtype=np.float32)
    return strain, (np.arange(n) % 2).astype(np.int64)


def tiny_model_dir(out: Path, d_model: int = 32, layers: int = 2) -> Path:
    """A tiny random-init Whisper through the base_model stage (for --smoke and tests: no download)."""
    from gwlora.base_model import prepare

    random_init = {"d_model": d_model, "encoder_layers": layers, "encoder_attention_heads": 4,
                   "encoder_ffn_dim": 4 * d_model, "num_mel_bins": WHISPER_N_MELS, "init_std": 0.1}
    prepare({"pretrained": None, "random_init": random_init}, 0, out)
    return out


def ours(setup: Setup, variant: Variant, context: str = "clip", pooling: str = "mean", **build) -> torch.nn.Module:
    """The workflow's classifier for `variant`, built by gwlora.model exactly as the train stage builds it.

    `build`: build_classifier's keywords (``attn_implementation``, ``precision``), to time another choice.
    """
    torch.manual_seed(0)
    config = dict(OURS_MODEL, context=context, pooling=pooling)
    base = build_classifier(setup.model_dir, N_CHANNELS, setup.n_samples // WHISPER_HOP_LENGTH, config, **build)
    return apply_variant(base, variant).to(setup.device).train()


@dataclass
class Result:
    """One comparison's figures: what is compared, the two values, their ratio and the target."""

    number: int | str  # 4a, 4b: two figures of one comparison
    title: str
    baseline: str
    contender: str
    metric: str  # what the ratio is, e.g. "samples/s, ours / original study"
    baseline_value: float | None
    contender_value: float | None
    unit: str
    ratio: float | None
    target: str  # e.g. ">= 10"
    met: bool | None
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "n/a" if self.met is None else ("PASS" if self.met else "MISS")

    def to_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}


def judged(ratio: float | None, target: float, at_least: bool) -> tuple[str, bool | None]:
    text = f"{'>=' if at_least else '<='} {target:g}"
    if ratio is None or not np.isfinite(ratio):
        return text, None
    return text, bool(ratio >= target if at_least else ratio <= target)


def alternate(contenders: dict[str, tuple[Callable[[], None], int]], setup: Setup, warmup: int = 1) -> dict[str, float]:
    """Median seconds per step of each contender, repetitions alternating between them.

    `contenders` maps a name to (step function, steps per repetition).
    """
    for step, n in contenders.values():  # warm-up: allocator, kernels, caches, lazy init
        for _ in range(warmup):
            step()
    setup.sync()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for rep in range(setup.reps):
        order = list(contenders.items())
        if rep % 2:
            order.reverse()  # A B, B A, A B, ...: neither always runs first
        for name, (step, n) in order:
            setup.sync()
            start = time.perf_counter()
            for _ in range(n):
                step()
            setup.sync()
            times[name].append((time.perf_counter() - start) / n)
    return {name: float(np.median(t)) for name, t in times.items()}


def print_table(results: list[Result], file=None) -> None:
    print(markdown_table(results), file=file)


def markdown_table(results: list[Result]) -> str:
    lines = ["| # | comparison | baseline | ours | value (baseline -> ours) | ratio | target | verdict |",
             "|--:|:--|:--|:--|:--|--:|:--|:--|"]
    for r in results:
        b = "n/a" if r.baseline_value is None else f"{r.baseline_value:.4g}"
        c = "n/a" if r.contender_value is None else f"{r.contender_value:.4g}"
        ratio = "n/a" if r.ratio is None else f"{r.ratio:.3g}"
        lines.append(f"| {r.number} | {r.title} | {r.baseline} | {r.contender} | {b} -> {c} {r.unit} | {ratio} ({r.metric}) | {r.target} | {r.verdict} |")
    return "\n".join(lines)


def scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="gwlora-bench-"))


def our_step(setup: Setup, model: torch.nn.Module, lr: float, precision: str = "auto") -> tuple[Callable[[], None], torch.optim.Optimizer]:
    """One step of the train stage's loop: a batch from the device-resident cache, then `gwlora.train.train_step`.

    `precision`: train.precision (auto, the train stage's default; fp32; bf16).
    """
    from gwlora.precision import resolve_precision
    from gwlora.scoring import SplitOnDevice
    from gwlora.train import make_optimizer, train_step

    split = SplitOnDevice(setup.features_dir(), setup.device)
    precision = resolve_precision(precision, setup.device)
    optimizer = make_optimizer(model, lr, 0.01)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    order = torch.Generator().manual_seed(0)

    def step() -> None:
        x, y = split.batch(torch.randint(split.n, (setup.batch,), generator=order))
        train_step(model, optimizer, loss_fn, x, y, precision)

    return step, optimizer
