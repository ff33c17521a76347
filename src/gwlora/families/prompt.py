"""Prompt tuning for the encoder (Lester et al. 2021): learned vectors prepended to its sequence, the encoder frozen.

One variant ``prompt-l<length>`` per length; the modules are :mod:`gwlora.methods`'. With a
fixed context (30 s or a duration) the prompts take positions from the audio.
"""

from __future__ import annotations

from ..constants import WHISPER_FULL_FRAMES
from ..encoder import clip_frames, context_frames, contexts
from ..errors import ConfigError
from .family import Family, freeze_encoder


class Prompt(Family):
    name = "prompt"
    parameters = columns = sort_by = ("prompt_length",)
    method = True

    def expand(self, key, spec):
        return [(f"prompt-l{n}", {"prompt_length": n}) for n in spec["length"]]

    def check(self, key, spec, config, shape):
        """With a fixed context the prompts take positions from it: the clip must still fit beside the longest."""
        frames = clip_frames(config["data"]["window_seconds"])
        longest = max(spec["length"])
        for context in contexts(config["model"]):
            if context == "clip":
                continue
            positions = min(context_frames(context, frames), WHISPER_FULL_FRAMES) // 2
            if frames // 2 + longest > positions:
                raise ConfigError(
                    f"invalid config: train.variants.{key}.length: {longest} prompt positions and the clip's {frames // 2} exceed "
                    f"the {positions} positions of model.context {context}"
                )

    def apply(self, model, variant):
        from .. import methods

        freeze_encoder(model)
        # 30 s context (the encoder has more positions than the clip): the prompts take positions from the audio
        replace = model.encoder.config.max_source_positions > model.clip_positions
        methods.add_prompts(model.encoder, variant.params["prompt_length"], replace=replace)
        return model

    def trains(self, record):
        return f"{int(record['prompt_length'])} prompt vectors + head"


PROMPT = Prompt()
