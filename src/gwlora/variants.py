"""A variant: one training configuration of the classifier, as its runs, the run state and summary.json record it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# The family fields of Variant before `params` (summary.json of older runs): each record carried all of them, those of
# other families None, or for LoRA's empty, zero or false
LEGACY_LORA_FIELDS = ("rank", "alpha", "target_modules", "dropout", "rslora", "dora")
LEGACY_FIELDS = (*LEGACY_LORA_FIELDS, "layers", "bottleneck", "adapter_style", "prompt_length", "peft_type", "peft_config")


@dataclass(frozen=True)
class Variant:
    """A compared variant at one learning rate; `params` are its family's parameters (:mod:`gwlora.families`)."""

    name: str  # the compared variant (full, lora-r8, ...): a row of the tables
    family: str  # a registered family (gwlora.families.FAMILIES)
    lr: float
    run: str = ""  # its runs' wildcard and folder: the name, plus /lr<lr> when its family lists several lrs
    config_key: str = ""  # its key under train.variants: lora, lora-all, ... (= family for the others)
    context: str | None = None  # when model.context lists several: this variant's (its name ends in -ctx<context>)
    params: dict[str, Any] = field(default_factory=dict)  # its family's parameters: rank, bottleneck, ...

    def __post_init__(self):
        if not self.run:
            object.__setattr__(self, "run", self.name)
        if not self.config_key:
            object.__setattr__(self, "config_key", self.family)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["params"] = dict(self.params)
        if d["context"] is None:
            del d["context"]  # a single context: the record of runs made before the context axis, unchanged
        return d

    def record(self) -> dict[str, Any]:
        """The variant as the tables and the deck read it: flat, its family's parameters beside name and family."""
        d = self.to_dict()
        params = d.pop("params")
        return {**d, **params}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Variant":
        """A variant from :meth:`to_dict`, or from the flat record of runs made before `params` (each field at the top level)."""
        d = dict(d)
        if "params" not in d:
            own = LEGACY_LORA_FIELDS if d["family"] == "lora" else [
                k for k in LEGACY_FIELDS if k not in LEGACY_LORA_FIELDS and d.get(k) is not None]
            d["params"] = {k: d[k] for k in own if k in d}
            for k in LEGACY_FIELDS:
                d.pop(k, None)
        return cls(**d)
