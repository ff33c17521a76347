"""The adaptation methods LoRA is compared with that peft does not provide for a Whisper *encoder*.

* **Bottleneck adapters** (Houlsby et al. 2019; Pfeiffer et al. 2021): ``h + up(gelu(down(h)))``
  after the attention block's output projection and after the feed-forward block's ``fc2``
  (Houlsby), or after ``fc2`` only (Pfeiffer), each before its residual add; ``2 d b + b + d``
  parameters per insertion. The up-projection starts at zero, so training starts at the
  pretrained model. peft has no bottleneck adapter (its "adapters" are low-rank updates of
  weights), and AdapterHub's ``adapters`` library pins transformers 4.x, so this is our own
  module, wrapped around the projection it follows (:class:`Adapted`), not a patched forward.
  An adapter is a function of the output, not a weight update, so it cannot be merged: that is
  what the latency comparison measures.
* **Prompt tuning for an audio encoder** (Lester et al. 2021, for speech e.g. Chang et al. 2022):
  ``L`` learned vectors prepended to the encoder's sequence after the convolutional stem and the
  positional embeddings (:class:`Prompted`, around the first encoder layer) and dropped again
  after the last layer (:class:`DropPrompts`, around the final layer norm), so pooling sees the
  audio positions only (``L d`` parameters). peft's prompt-learning methods prepend virtual
  tokens to a text model's word embeddings (``inputs_embeds``/``input_ids``); an encoder fed
  log-mel features has neither. With 30 s context Whisper's 1,500 positions are fixed, so the
  prompts take the last ``L`` of them from the audio (``L x 0.02 s`` of audio lost, the outline's
  "reduced sequence length"); with clip context they lengthen the sequence instead.
* **BitFit** (Ben Zaken et al. 2022) needs no module: only the encoder's biases train
  (:mod:`gwlora.families.bitfit`).

Every wrapper has an ``enabled`` flag; :func:`disabled` turns them all off for the base model's
latency, as peft's ``disable_adapter`` does for its methods.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from .constants import WHISPER_FRAMES_PER_SECOND

# seconds of audio per encoder position: two frames (the conv stem's stride 2) of 10 ms
SECONDS_PER_POSITION = 2 / WHISPER_FRAMES_PER_SECOND


class Bottleneck(nn.Module):
    """``h + up(gelu(down(h)))``: a residual bottleneck adapter, identity at initialisation (up is zero)."""

    def __init__(self, width: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.up = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(nn.functional.gelu(self.down(h)))


class Adapted(nn.Module):
    """A module followed by a bottleneck adapter: ``adapter(module(x))``, the module itself when disabled."""

    def __init__(self, module: nn.Module, width: int, bottleneck: int):
        super().__init__()
        self.module = module
        self.adapter = Bottleneck(width, bottleneck)
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        return self.adapter(out) if self.enabled else out


ADAPTER_SITES = {"houlsby": ("self_attn.out_proj", "fc2"), "pfeiffer": ("fc2",)}


def add_adapters(encoder: nn.Module, bottleneck: int, style: str) -> None:
    """Put a bottleneck adapter after each of `style`'s projections in every encoder layer (:data:`ADAPTER_SITES`)."""
    width = encoder.config.d_model
    for layer in encoder.layers:
        for site in ADAPTER_SITES[style]:
            parent_name, _, name = site.rpartition(".")
            parent = layer.get_submodule(parent_name) if parent_name else layer
            setattr(parent, name, Adapted(getattr(parent, name), width, bottleneck))


class Prompted(nn.Module):
    """An encoder layer that first prepends the learned prompts to its input sequence.

    ``replace``: the prompts take the last positions of the sequence instead of lengthening it
    (30 s context, where Whisper's 1,500 positions are all there is).
    """

    def __init__(self, layer: nn.Module, prompts: nn.Parameter, replace: bool):
        super().__init__()
        self.layer = layer
        self.prompts = prompts
        self.replace = replace
        self.enabled = True

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        if self.enabled:
            length = self.prompts.shape[0]
            if self.replace:
                hidden_states = hidden_states[:, : hidden_states.shape[1] - length]
            prompts = self.prompts.to(hidden_states.dtype).expand(hidden_states.shape[0], -1, -1)
            hidden_states = torch.cat([prompts, hidden_states], dim=1)
        return self.layer(hidden_states, *args, **kwargs)


class DropPrompts(nn.Module):
    """The encoder's final layer norm, applied after dropping the prompt positions again."""

    def __init__(self, norm: nn.Module, prompted: Prompted):
        super().__init__()
        self.norm = norm
        self.prompted = [prompted]  # a plain list: the first layer is the encoder's submodule, not this one's
        self.enabled = True

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.enabled and self.prompted[0].enabled:
            hidden_states = hidden_states[:, self.prompted[0].prompts.shape[0] :]
        return self.norm(hidden_states)


def add_prompts(encoder: nn.Module, length: int, replace: bool) -> nn.Parameter:
    """Prepend `length` learned vectors to the encoder's sequence (see the module docstring); returns them."""
    d = encoder.config.d_model
    # initialised at the scale of the stem's output, so the prompts neither vanish nor dominate the attention
    prompts = nn.Parameter(torch.randn(length, d) * encoder.embed_positions.weight.std().clamp_min(1e-3))
    first = Prompted(encoder.layers[0], prompts, replace)
    encoder.layers[0] = first
    encoder.layer_norm = DropPrompts(encoder.layer_norm, first)
    return prompts


def sequence_cost(variant, context: str, clip_positions: int, max_positions: int) -> dict:
    """Positions the encoder layers see, audio positions among them, and the seconds of audio prompts take.

    Any context but ``clip`` (``30s`` or a duration) fixes the sequence at its positions, so the prompts
    take the last of them: ``length`` x 20 ms of the context's audio. With ``clip`` they lengthen the sequence.
    """
    length = variant.params.get("prompt_length", 0)
    if context != "clip":
        return {"positions": max_positions, "audio_positions": max_positions - length,
                "prompt_positions": length, "audio_seconds_lost": length * SECONDS_PER_POSITION}
    return {"positions": clip_positions + length, "audio_positions": clip_positions,
            "prompt_positions": length, "audio_seconds_lost": 0.0}


@contextmanager
def disabled(model: nn.Module):
    """Run `model` without its adapters and prompts (the base model), restoring them afterwards."""
    wrappers = [m for m in model.modules() if isinstance(m, (Adapted, Prompted, DropPrompts))]
    for m in wrappers:
        m.enabled = False
    try:
        yield model
    finally:
        for m in wrappers:
            m.enabled = True
