"""Comparison 8: a frozen (and a partial) run's wall time per epoch, on the whole model against its cached encoder outputs.

Issue 20, item 4: a frozen layer's output never changes during training, so the
frozen variant trains its head on pooled encoder outputs computed once
(:mod:`gwlora.encoder_cache`) and partial-top1 its top layer on the hidden
states entering it. Each contender is one epoch of the train stage's loop
(:func:`gwlora.train.train_step` over every window in shuffled batches), the
two alternating: before, the classifier on the features, as every run did;
after, :class:`gwlora.encoder_cache.TrainsAbove` on the cache. The cache's own
cost, one forward pass over the split shared by every lr and seed, is printed
beside the figure. 8a is the demo's frozen run (config/demo.yaml's random
encoder and head, batch 16); 8b and 8c use the suite's model and batch.
"""

from __future__ import annotations

import time

import torch
from common import N_CHANNELS, OURS_MODEL, Result, Setup, alternate, judged, tiny_model_dir

from gwlora.constants import WHISPER_HOP_LENGTH
from gwlora.encoder_cache import TrainsAbove, encode
from gwlora.families import apply_variant
from gwlora.model import build_classifier
from gwlora.precision import resolve_precision
from gwlora.scoring import SplitOnDevice
from gwlora.train import make_optimizer, train_step
from gwlora.variants import Variant

TARGET = 10.0  # issue 20: a frozen run at least 10x cheaper per epoch
PARTIAL_TARGET = 1.0  # issue 20 sets none for partial: cheaper at all (its top layer still trains forward and backward)
FROZEN = Variant(name="frozen", family="frozen", config_key="frozen", lr=1e-3)
PARTIAL = Variant(name="partial-top1", family="partial", config_key="partial", lr=1e-4, params={"layers": 1})
DEMO_MODEL = {"context": "clip", "pooling": "mean", "head_hidden": [128, 64]}  # config/demo.yaml's model section
DEMO_BATCH = 16


def epoch(model, split: SplitOnDevice, batch: int, lr: float, precision):
    """One epoch of the train stage's loop over `split` (shuffled batches of `batch`), as a step function."""
    optimizer = make_optimizer(model, lr, 0.01)
    loss_fn, order = torch.nn.BCEWithLogitsLoss(), torch.Generator().manual_seed(0)

    def run() -> None:
        for idx in torch.randperm(split.n, generator=order).split(batch):
            x, y = split.batch(idx)
            train_step(model, optimizer, loss_fn, x, y, precision)

    return run


def compare(setup: Setup, model_dir, model_config: dict, variant: Variant, batch: int):
    """(seconds per epoch uncached, cached, seconds to compute the cache) of `variant`."""
    precision = resolve_precision("auto", setup.device)  # the train stage's default
    split = SplitOnDevice(setup.features_dir(), setup.device)
    models = []
    for _ in range(2):  # the same seeded classifier twice: one trains on the features, one on the cache
        torch.manual_seed(0)
        base = build_classifier(model_dir, N_CHANNELS, setup.n_samples // WHISPER_HOP_LENGTH, model_config)
        models.append(apply_variant(base, variant).to(setup.device).train())
    top = variant.params.get("layers", 0)
    start = time.perf_counter()
    cached = split.with_inputs(encode(models[1], split, top, 2 * batch, precision, f"cache {variant.name}"))
    setup.sync()
    cache_s = time.perf_counter() - start
    t = alternate({"uncached": (epoch(models[0], split, batch, variant.lr, precision), 1),
                   "cached": (epoch(TrainsAbove(models[1], top), cached, batch, variant.lr, precision), 1)}, setup)
    return t["uncached"], t["cached"], cache_s


def run(setup: Setup) -> list[Result]:
    demo_model = tiny_model_dir(setup.work / "demo-model", d_model=64, layers=2)  # config/demo.yaml's random_init
    cases = [("8a", "demo frozen run", demo_model, DEMO_MODEL, FROZEN, DEMO_BATCH),
             ("8b", f"frozen run, {setup.label}", setup.model_dir, OURS_MODEL, FROZEN, setup.batch),
             ("8c", f"partial-top1 run, {setup.label}", setup.model_dir, OURS_MODEL, PARTIAL, setup.batch)]
    out = []
    for number, what, model_dir, model_config, variant, batch in cases:
        before, after, cache_s = compare(setup, model_dir, model_config, variant, batch)
        ratio = before / after
        text, met = judged(ratio, TARGET if variant.family == "frozen" else PARTIAL_TARGET, at_least=True)
        note = (f"{len(setup.labels)} windows, batch {batch}; the cache took {cache_s:.3g} s once "
                f"({cache_s / before:.2f} uncached epochs), shared by every lr and seed")
        out.append(Result(number, f"encoder cache: {what}, wall time per epoch", "whole model on the features",
                          "cached encoder outputs", "s/epoch, uncached / cached", before, after, "s/epoch", ratio,
                          text, met, notes=[note],
                          extra={"uncached_epoch_s": before, "cached_epoch_s": after, "cache_s": cache_s, "batch": batch}))
    return out
