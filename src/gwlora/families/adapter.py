"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021) in every encoder layer, the encoder frozen.

One variant ``adapter-b<b>`` per bottleneck width; the modules are :mod:`gwlora.methods`'.
An adapter is a function of the output, not a weight update, so it cannot be merged.
"""

from __future__ import annotations

from ..cli import StageError
from .family import Family, check_width, freeze_encoder


class Adapter(Family):
    name = "adapter"
    parameters = columns = ("bottleneck", "adapter_style")
    sort_by = ("bottleneck",)
    method = True

    def expand(self, key, spec):
        return [(f"adapter-b{b}", {"bottleneck": b, "adapter_style": spec["style"]}) for b in spec["bottleneck"]]

    def check(self, key, spec, config, shape):
        check_width(key, "bottleneck", spec["bottleneck"], config, shape, ": an adapter's bottleneck is narrower than the layer")

    def apply(self, model, variant):
        from .. import methods

        freeze_encoder(model)
        b, width = variant.params["bottleneck"], model.encoder.config.d_model
        if b > width:
            raise StageError(f"variant {variant.name}: bottleneck {b} exceeds the layer width {width}")
        methods.add_adapters(model.encoder, b, variant.params["adapter_style"])
        return model

    def trains(self, record):
        return f"{record['adapter_style']} adapters (bottleneck {int(record['bottleneck'])}) + head"


ADAPTER = Adapter()
