"""What a config says about the encoder before any model is loaded: its shape, and the frames of its contexts.

Config validation, the model, the families and the resource estimates all
read these; none of them imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from .constants import WHISPER_FRAMES_PER_SECOND, WHISPER_N_MELS

# The encoder's linear layers that a method may adapt (LoRA's all-linear)
ENCODER_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")

# encoder (d_model, layers, ffn) of the released Whisper sizes, for hub ids not yet downloaded
WHISPER_SIZES = {
    "tiny": (384, 4, 1536),
    "base": (512, 6, 2048),
    "small": (768, 12, 3072),
    "medium": (1024, 24, 4096),
    "large": (1280, 32, 5120),
}
DEFAULT_SIZE = "small"  # an unknown pretrained model is taken to be Whisper small


def encoder_shape(model: dict, assume_hub_size: bool = False) -> tuple[int, int, int, int] | None:
    """(d_model, encoder layers, FFN width, mel bins) of the configured encoder.

    Known before any download for the random encoder and a local directory. A hub id
    is None (checked when the model is loaded), or with `assume_hub_size` the released
    Whisper size its name contains (:data:`WHISPER_SIZES`, Whisper small when none),
    for estimates made before the download.
    """
    if model["pretrained"] is None:
        cfg = model["random_init"]
    else:
        local = Path(model["pretrained"]).expanduser() / "config.json"
        if not local.is_file():
            if not assume_hub_size:
                return None
            name = str(model["pretrained"]).lower()
            size = next((s for s in WHISPER_SIZES if s in name), DEFAULT_SIZE)
            return (*WHISPER_SIZES[size], 128 if "large-v3" in name else WHISPER_N_MELS)
        cfg = json.loads(local.read_text())
    d = int(cfg["d_model"])
    return d, int(cfg["encoder_layers"]), int(cfg.get("encoder_ffn_dim", 4 * d)), int(cfg.get("num_mel_bins", WHISPER_N_MELS))


def clip_frames(window_seconds: float) -> int:
    """Log-mel frames of one clip, as the features stage makes them.

    The dataset cuts ``round(window_seconds * sample_rate)`` samples and Whisper's STFT
    (hop 10 ms, its last frame dropped) gives one frame per hop: ``round(window_seconds
    * 100)``. Rounding, not ``ceil``: 1.1 s is 110.00000000000001 frames in floating point.
    """
    return round(window_seconds * WHISPER_FRAMES_PER_SECOND)


def context_seconds(context: str) -> float | None:
    """The duration a `model.context` names in seconds ("2s" -> 2.0, "30s" -> 30.0), or None for ``clip``."""
    return None if context == "clip" else float(context[:-1])


def context_frames(context: str, clip_frames: int) -> int:
    """Log-mel frames the encoder sees under `context`: the clip's own, or the duration's (100 a second)."""
    seconds = context_seconds(context)
    return clip_frames if seconds is None else round(seconds * WHISPER_FRAMES_PER_SECOND)


def contexts(model: dict) -> list[str]:
    """The contexts of `model.context`: one, or the listed ones (a variant axis)."""
    value = model["context"]
    return list(value) if isinstance(value, list) else [value]


def context_suffix(context: str) -> str:
    """The variant-name suffix of a context on the context axis: -ctxclip, -ctx2s, -ctx2.5s (safe in paths and wildcards)."""
    return f"-ctx{context}"
