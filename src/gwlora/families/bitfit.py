"""BitFit (Ben Zaken et al. 2022): only the encoder's biases (and the head) train; one variant ``bitfit``.

It changes biases only, so its "unmerged" model is the base architecture with other biases.
"""

from __future__ import annotations

from .family import Family


class BitFit(Family):
    name = "bitfit"
    method = True

    def apply(self, model, variant):
        for name, p in model.encoder.named_parameters():
            p.requires_grad_(name.rsplit(".", 1)[-1] == "bias")
        model.head.requires_grad_(True)
        return model

    def trains(self, record):
        return "encoder biases + head"


BITFIT = BitFit()
