"""The classifier and its variants: a Whisper encoder shared across detector channels + an MLP head.

Each detector channel's log-mel goes through the *same* encoder; the pooled
hidden states of all channels are concatenated and the head outputs one logit
(signal vs noise). Variants only decide what trains:

* ``full``: everything; ``frozen``: the head only; ``partial``: the top-k
  encoder layers (and the final layer norm) plus the head;
* ``lora``: low-rank adapters through peft (``LoraConfig`` + ``get_peft_model``)
  on the configured encoder projections, the head in ``modules_to_save``;
  scaled by alpha/r (the paper) or alpha/sqrt(r) (rsLoRA), optionally DoRA;
* ``bitfit``: the encoder's biases (and the head);
* ``adapter`` and ``prompt``: bottleneck adapters and prompt tuning, our own
  modules (:mod:`gwlora.methods` says why), the encoder frozen;
* ``peft``: any other peft method, its config class built from the config's
  keyword arguments (validated in :mod:`gwlora.config`), the head in
  ``modules_to_save`` as for LoRA.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import WhisperForAudioClassification

from .cli import StageError
from . import methods
from .config import Variant, context_frames
from .constants import WHISPER_FULL_FRAMES, WHISPER_N_MELS



def load_encoder(model_dir: str | Path, n_frames: int, context: str, attn_implementation: str = "sdpa"):
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
        if self.pooling == "last":
            pooled = hidden[:, -1]
        else:
            pooled = hidden[:, : self.clip_positions].mean(dim=1)
        return self.head(pooled.reshape(b, c * pooled.shape[-1])).squeeze(-1)
        # deck: end


def build_classifier(model_dir, n_channels: int, n_frames: int, model_config: dict) -> StrainClassifier:
    encoder = load_encoder(model_dir, n_frames, model_config["context"])
    return StrainClassifier(encoder, n_channels, n_frames, model_config["pooling"], model_config["head_hidden"])


def apply_variant(model: StrainClassifier, variant: Variant) -> nn.Module:
    """Set what trains; for LoRA, wrap the model with peft. Returns the model to train."""
    if variant.family == "full":
        for name, p in model.named_parameters():
            p.requires_grad_("embed_positions" not in name)  # Whisper keeps its positions fixed
        return model
    model.encoder.requires_grad_(False)
    model.head.requires_grad_(True)
    if variant.family == "frozen":
        return model
    # config.py checks layers and ranks against a local or random encoder; a hub encoder's shape is known only now
    if variant.family == "partial":
        layers = model.encoder.layers
        if variant.layers > len(layers):
            raise StageError(f"variant {variant.name}: partial.layers {variant.layers} exceeds the encoder's {len(layers)} layers")
        for layer in layers[len(layers) - variant.layers :]:
            layer.requires_grad_(True)
        model.encoder.layer_norm.requires_grad_(True)
        return model
    if variant.family == "bitfit":
        for name, p in model.encoder.named_parameters():
            p.requires_grad_(name.rsplit(".", 1)[-1] == "bias")
        return model
    if variant.family == "adapter":
        width = model.encoder.config.d_model
        if variant.bottleneck > width:
            raise StageError(f"variant {variant.name}: bottleneck {variant.bottleneck} exceeds the layer width {width}")
        methods.add_adapters(model.encoder, variant.bottleneck, variant.adapter_style)
        return model
    if variant.family == "prompt":
        # 30 s context (the encoder has more positions than the clip): the prompts take positions from the audio
        methods.add_prompts(model.encoder, variant.prompt_length, replace=model.encoder.config.max_source_positions > model.clip_positions)
        return model
    if variant.family == "peft":
        try:
            return get_peft_model(model, peft_config(variant))
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise StageError(f"variant {variant.name}: peft {variant.peft_type} {variant.peft_config}: {exc}") from exc
    if variant.family == "lora":
        width = model.encoder.config.d_model
        if variant.rank > width:
            raise StageError(f"variant {variant.name}: rank {variant.rank} exceeds the layer width {width}")
        # deck: lora-config
        lora = LoraConfig(
            r=variant.rank,
            lora_alpha=variant.alpha,
            lora_dropout=variant.dropout,
            target_modules=list(variant.target_modules),
            modules_to_save=["head"],
            bias="none",
            use_rslora=variant.rslora,
            use_dora=variant.dora,
        )
        # deck: end
        try:
            return get_peft_model(model, lora)
        except ValueError as exc:
            raise StageError(f"variant {variant.name}: target_modules {list(variant.target_modules)}: {exc}") from exc
    raise StageError(f"unknown variant family {variant.family!r}")


def peft_config(variant: Variant):
    """The peft config of a ``peft`` variant: its type's config class, the configured arguments, the head in modules_to_save."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    known = {str(getattr(t, "value", t)): cls for t, cls in PEFT_TYPE_TO_CONFIG_MAPPING.items()}
    return known[variant.peft_type](**variant.peft_config, modules_to_save=["head"])


def probe_peft(config, shape: tuple[int, int, int, int] | None) -> str | None:
    """Apply a peft config to a one-layer encoder of `shape` (d_model, -, FFN width, mel bins): None if it adapts the encoder, else why not.

    Run at config validation, so a method that cannot adapt the encoder stops the workflow before any job.
    """
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    d, _, ffn, mels = shape or (64, 1, 256, WHISPER_N_MELS)  # a hub encoder: its shape is unknown before download
    encoder = WhisperEncoder(WhisperConfig(d_model=d, encoder_layers=1, encoder_attention_heads=1, encoder_ffn_dim=ffn,
                                           num_mel_bins=mels, max_source_positions=2))
    encoder.requires_grad_(False)
    model = StrainClassifier(encoder, 1, 4, "mean", [])
    try:
        wrapped = get_peft_model(model, config)
    except Exception as exc:  # noqa: BLE001 - peft raises ValueError, TypeError, KeyError, ... depending on the method
        return f"{type(exc).__name__}: {exc}"
    if not any(p.requires_grad for n, p in wrapped.named_parameters() if "head" not in n.split(".")):
        return "it trains no encoder parameter"
    try:
        with torch.no_grad():
            wrapped.eval()(torch.zeros(1, 1, mels, 4))
    except Exception as exc:  # noqa: BLE001
        return f"a forward pass fails: {type(exc).__name__}: {exc}"
    return None


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
