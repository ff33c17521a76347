"""Comparison 5: batched feature extraction (the features stage) against one extractor call per item.

Ours is ``gwlora.features.extract`` over a batch of windows and both detectors;
the baseline calls ``WhisperFeatureExtractor`` once per window and detector, at
the same clip length (the target's comparison). For context, the original
study's own per-item call (https://github.com/alberthu233/whisper_with_lora),
with its default 30 s padding, is timed too (the contender named "seed 30 s").
"""

from __future__ import annotations

from common import Result, Setup, alternate, judged
from transformers import WhisperFeatureExtractor

from gwlora.constants import WHISPER_SAMPLE_RATE
from gwlora.features import clip_extractor, extract

TARGET = 5.0


def run(setup: Setup) -> list[Result]:
    clip = clip_extractor(setup.model_dir, setup.n_samples)
    seed = WhisperFeatureExtractor.from_pretrained(str(setup.model_dir))
    strain = setup.strain
    n = strain.shape[0] * strain.shape[1]

    def per_item(extractor):
        def go():
            for window in strain:
                for ch in window:
                    extractor(ch, sampling_rate=WHISPER_SAMPLE_RATE, return_tensors="np")
        return go

    t = alternate({"per-item": (per_item(clip), 1), "batched": (lambda: extract(strain, clip), 1),
                   "seed 30 s": (per_item(seed), 1)}, setup)
    rate = {k: n / v for k, v in t.items()}
    ratio = rate["batched"] / rate["per-item"]
    target, met = judged(ratio, TARGET, at_least=True)
    return [Result(
        5, "feature extraction: batched vs per-item call (same clip length)", "WhisperFeatureExtractor per item",
        "gwlora.features.extract (batched)", "channels/s, batched / per-item", rate["per-item"], rate["batched"],
        "channels/s", ratio, target, met,
        notes=[(f"the original study's per-item call at 30 s padding: {rate['seed 30 s']:.4g} channels/s; "
                f"batched clip extraction is {rate['batched'] / rate['seed 30 s']:.3g}x that")],
        extra={"seconds": t, "channels": n},
    )]
