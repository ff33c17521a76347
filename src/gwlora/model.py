"""The classifier: a Whisper encoder shared across detector channels + an MLP head.

Each detector channel's log-mel goes through the *same* encoder; the pooled
hidden states of all channels are concatenated and the head outputs one logit
(signal vs noise). What trains is the variant's family's business
(:func:`gwlora.families.apply_variant`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AttentionInterface, WhisperForAudioClassification
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.models.whisper.modeling_whisper import eager_attention_forward

from .cli import StageError
from .encoder import context_frames


# The attention kernel of every run, chosen per call by device, precision and sequence length, as measured
# (docs/benchmarks.md, "fp32 against bf16"; benchmarks/cmp7_precision.py's 7-attn, the attention core alone, fwd+bwd):
# - on an Intel Xeon with AMX (torch: amx_bf16, avx512_bf16), in bf16 the explicit matmuls of the eager kernel beat
#   torch's SDPA (on a CPU its flash kernel) 4.6x at 50 positions and 4.9x at 100, but lose at 1500 (SDPA 1.3x faster);
#   in fp32 the two tie within 5-20% at 50-100 positions and SDPA is 2.4x faster at 1500;
# - on an AMD EPYC (AVX2, bf16 emulated) SDPA ties or beats eager at every length and precision;
# - on CUDA SDPA is the flash / memory-efficient kernel.
# So eager for bf16 on a CPU up to EAGER_MAX_POSITIONS (the longest length measured faster there), SDPA everywhere else.
EAGER_MAX_POSITIONS = 100


def attention_by_shape(module, query, key, value, attention_mask, **kwargs):
    """Whisper's attention through the kernel measured fastest for this call's device, dtype and length (above)."""
    if query.device.type == "cpu" and query.dtype == torch.bfloat16 and query.shape[-2] <= EAGER_MAX_POSITIONS:
        return eager_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register("gwlora", attention_by_shape)
ATTENTION_KERNEL = "gwlora"


def load_encoder(model_dir: str | Path, n_frames: int, context: str, attn_implementation: str = ATTENTION_KERNEL):
    """The Whisper encoder of `model_dir`, sized for `n_frames` (clip), a duration (``2s``: 200 frames) or 3000 frames (30s).

    Every context but ``30s`` slices the positional embedding to its positions
    (half its frames); the classifier pads the clip's log-mels up to them.
    """
    model = WhisperForAudioClassification.from_pretrained(str(model_dir), attn_implementation=attn_implementation)
    encoder = model.encoder
    # deck: clip-context
    if context != "30s":
        frames = context_frames(context, n_frames)
        if frames < n_frames:
            raise StageError(f"model.context {context!r}: {frames} frames are shorter than the clip's {n_frames}")
        positions = frames // (encoder.conv1.stride[0] * encoder.conv2.stride[0])
        if positions > encoder.embed_positions.num_embeddings:
            raise StageError(f"context {context!r} of {frames} frames exceeds the encoder's {encoder.embed_positions.num_embeddings} positions")
        sliced = nn.Embedding(positions, encoder.config.d_model)
        sliced.weight.data.copy_(encoder.embed_positions.weight.data[:positions])
        sliced.requires_grad_(False)
        encoder.embed_positions = sliced
        encoder.config.max_source_positions = positions
        encoder.max_source_positions = positions
    # deck: end
    return encoder


class StrainClassifier(nn.Module):
    """Shared Whisper encoder over C channels, pooled, concatenated, MLP head -> one logit."""

    def __init__(self, encoder: nn.Module, n_channels: int, n_frames: int, pooling: str, head_hidden: list[int]):
        super().__init__()
        self.encoder = encoder
        self.n_channels = n_channels
        self.n_frames = n_frames
        self.input_frames = encoder.config.max_source_positions * encoder.conv1.stride[0] * encoder.conv2.stride[0]
        self.clip_positions = n_frames // (encoder.conv1.stride[0] * encoder.conv2.stride[0])
        self.pooling = pooling
        d = encoder.config.d_model
        layers: list[nn.Module] = []
        width = n_channels * d
        for hidden in head_hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.head = nn.Sequential(*layers)

    def pad_to_context(self, x: torch.Tensor) -> torch.Tensor:
        """Pad clip log-mels to the encoder's input length as Whisper's extractor pads with silence.

        Zero-padded audio reaches the extractor's floor, max - 8 in log10 units,
        which after its (x + 4) / 4 scaling is the example's maximum minus 2.
        """
        missing = self.input_frames - x.shape[-1]
        if missing <= 0:
            return x
        floor = x.amax(dim=(-2, -1), keepdim=True) - 2.0
        return torch.cat([x, floor.expand(*x.shape[:-1], missing)], dim=-1)

    # deck: forward
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, c = features.shape[:2]
        x = self.pad_to_context(features.flatten(0, 1))
        hidden = self.encoder(input_features=x).last_hidden_state  # [B*C, positions, d]
        return self.classify(self.pool(hidden), b)
        # deck: end

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B*C, positions, d] -> [B*C, d]: the last position, or the mean over the clip's own positions."""
        if self.pooling == "last":
            return hidden[:, -1]
        return hidden[:, : self.clip_positions].mean(dim=1)

    def classify(self, pooled: torch.Tensor, b: int) -> torch.Tensor:
        """The head on B windows' pooled channels ([B*C, d], channel-minor) -> B logits (also what a cached frozen run trains)."""
        return self.head(pooled.reshape(b, self.n_channels * pooled.shape[-1])).squeeze(-1)


def build_classifier(model_dir, n_channels: int, n_frames: int, model_config: dict, attn_implementation: str = ATTENTION_KERNEL) -> StrainClassifier:
    encoder = load_encoder(model_dir, n_frames, model_config["context"], attn_implementation)
    return StrainClassifier(encoder, n_channels, n_frames, model_config["pooling"], model_config["head_hidden"])


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
