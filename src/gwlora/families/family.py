"""What every method family states: its config keys, its variants, how it is applied, what trains, its hook, its latency."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from ..variants import Variant  # noqa: F401 - annotations only; gwlora.variants imports nothing of this package

LATENCY_MODES = ("base", "unmerged", "merged")


class StepHook(Protocol):
    """What the training loop calls after each optimiser step, and whose state it saves with the run state."""

    def after_step(self, step: int) -> None: ...  # `step`: optimiser steps taken so far (1 after the first)

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class Family:
    """A method family: subclass it, set the attributes, override what differs, and register an instance.

    Under ``train.variants`` a family is configured by its `name` (when `plain_key`)
    and by any key matching `pattern` (``lora-all``, ``peft-ia3``); each key expands
    into variants (:meth:`expand`) named after it.
    """

    name: str = ""
    plain_key = True  # its name is a key under train.variants
    pattern: str | None = None  # the schema's regex of its further keys, e.g. "^lora-[a-z0-9]+(-[a-z0-9]+)*$"
    parameters: tuple[str, ...] = ()  # the names of its variants' parameters (Variant.params)
    columns: tuple[str, ...] = ()  # those parameters the tables (runs.csv, summary.csv) show, one column each
    sort_by: tuple[str, ...] = ()  # those parameters its variants are listed by (depth, rank, size)
    method = False  # an adaptation method compared on the deck's methods slide (not a baseline)
    latency_modes: tuple[str, ...] = ("base", "unmerged")  # of LATENCY_MODES: what its inference latency can measure
    trained = True  # it plans training runs (the matched filter trains nothing: its own rule scores it)
    peft_adapter = False  # its trained model is a peft model: checkpoints by save_pretrained, base by disable_adapter
    check_imports = False  # its check imports a library to probe it (seconds): left out where the config was checked before

    @property
    def base_architecture(self) -> bool:
        """Whether its trained model is the base architecture (weights changed, nothing added): its latency is the base's."""
        return tuple(self.latency_modes) == ("base",)

    def matches(self, key: str) -> bool:
        """Whether `key` under train.variants configures this family."""
        return (self.plain_key and key == self.name) or (self.pattern is not None and re.search(self.pattern.replace("$", r"\Z"), key) is not None)

    def keys(self, variants: dict) -> list[str]:
        """This family's keys of `train.variants`: its name first, then its further keys in config order."""
        return sorted((k for k in variants if self.matches(k)), key=lambda k: k != self.name)

    def expand(self, key: str, spec: dict) -> list[tuple[str, dict[str, Any]]]:
        """The (variant name, parameters) the family's `spec` under `key` trains: by default one variant named `key`."""
        return [(key, {})]

    def check(self, key: str, spec: dict, config: dict, shape: tuple[int, int, int, int] | None) -> None:
        """Raise ConfigError naming train.variants.<key> for what the schema cannot check; `shape` is the encoder's (d_model, layers, ffn, mels) or None."""

    def apply(self, model: "nn.Module", variant: "Variant") -> "nn.Module":
        """Set what trains on the classifier `model` (its encoder and head); returns the model to train."""
        raise NotImplementedError(f"family {self.name} does not say how it is applied")

    def trains(self, record: dict) -> str:
        """What trains, in a few words for the deck's table: `record` has 'family' and the family's parameters (floats from a table allowed)."""
        raise NotImplementedError(f"family {self.name} does not say what trains")

    def sort_key(self, record: dict) -> tuple:
        """Its variants' display order within one config key: by its `sort_by` parameters; `record` as for :meth:`trains`."""
        return tuple(record[name] for name in self.sort_by)

    def step_hook(self, model: "nn.Module", variant: "Variant", total_steps: int) -> StepHook | None:
        """What the training loop calls after each of the run's `total_steps` optimiser steps, or None (most families)."""
        return None

    def trainable_top_layers(self, variant: "Variant") -> int | None:
        """How many of the encoder's top layers train (0: none), or None where something below them trains too.

        Not None means the encoder below those layers is a frozen prefix whose output
        never changes during training, so :mod:`gwlora.encoder_cache` computes it once
        and the run trains on it; None (the default) for every family that needs the
        whole encoder at every step (full fine-tuning, LoRA, adapters, prompts, ...).
        """
        return None

    def before_loading(self, model: "nn.Module", variant: "Variant", best_dir: "Path") -> None:
        """Ready `model` (the variant applied) for the checkpoint saved in `best_dir`; most families need nothing."""


class PeftFamily(Family):
    """A method whose trained model is a peft model: saved by save_pretrained, its base timed by disable_adapter, merged where peft can."""

    method = True
    latency_modes = LATENCY_MODES
    peft_adapter = True


def encoder_source(model: dict) -> str:
    """The configured encoder, as error messages name it."""
    return "model.random_init" if model["pretrained"] is None else f"the encoder in {model['pretrained']}"


def check_width(key: str, name: str, values: list[int], config: dict, shape, what: str = "") -> None:
    """Raise ConfigError when the largest of `values` (train.variants.<key>.<name>) exceeds the encoder's d_model."""
    if shape is not None and max(values) > shape[0]:
        raise ConfigError(
            f"invalid config: train.variants.{key}.{name}: {'rank ' if name == 'ranks' else ''}{max(values)} exceeds the layer "
            f"width d_model {shape[0]} of {encoder_source(config['model'])}{what}"
        )


def freeze_encoder(model: "nn.Module") -> None:
    """The encoder frozen and the head trainable: where every family but full fine-tuning starts."""
    model.encoder.requires_grad_(False)
    model.head.requires_grad_(True)
