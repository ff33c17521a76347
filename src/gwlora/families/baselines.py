"""The baselines the methods are compared with: full fine-tuning, the frozen encoder, and its top layers fine-tuned.

Their trained model is the base architecture (weights changed, nothing added), so
their latency is the base model's.
"""

from __future__ import annotations

from ..cli import StageError
from ..errors import ConfigError
from .family import Family, encoder_source, freeze_encoder


class Full(Family):
    name = "full"
    latency_modes = ("base",)

    def apply(self, model, variant):
        for name, p in model.named_parameters():
            p.requires_grad_("embed_positions" not in name)  # Whisper keeps its positions fixed
        return model

    def trains(self, record):
        return "everything"


class Frozen(Family):
    name = "frozen"
    latency_modes = ("base",)

    def apply(self, model, variant):
        freeze_encoder(model)
        return model

    def trainable_top_layers(self, variant):
        return 0  # the head alone: its input, the pooled encoder output, is cached

    def trains(self, record):
        return "head only"


class Partial(Family):
    """The top-k encoder layers (and the final layer norm) plus the head; one variant ``partial-top<k>``."""

    name = "partial"
    parameters = columns = sort_by = ("layers",)
    latency_modes = ("base",)

    def expand(self, key, spec):
        return [(f"partial-top{spec['layers']}", {"layers": spec["layers"]})]

    def check(self, key, spec, config, shape):
        if shape is not None and spec["layers"] > shape[1]:
            raise ConfigError(
                f"invalid config: train.variants.{key}.layers ({spec['layers']}) exceeds "
                f"the {shape[1]} encoder_layers of {encoder_source(config['model'])}"
            )

    def apply(self, model, variant):
        freeze_encoder(model)
        layers, k = model.encoder.layers, variant.params["layers"]
        # config validation checks a local or random encoder; a hub encoder's depth is known only now
        if k > len(layers):
            raise StageError(f"variant {variant.name}: partial.layers {k} exceeds the encoder's {len(layers)} layers")
        for layer in layers[len(layers) - k :]:
            layer.requires_grad_(True)
        model.encoder.layer_norm.requires_grad_(True)
        return model

    def trainable_top_layers(self, variant):
        return variant.params["layers"]  # the hidden states entering the first of them are cached

    def trains(self, record):
        return f"top {int(record['layers'])} layers + head"


FULL, FROZEN, PARTIAL = Full(), Frozen(), Partial()
