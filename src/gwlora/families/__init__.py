"""The method families, each one unit: its config keys, its variants, how it is applied, what trains, its hook, its latency.

:data:`FAMILIES` is the registry, in display order; :func:`family` looks one up by
name. A new family is a :class:`Family` subclass in its own module, registered here
(or, from outside the package, with :func:`register`), plus its section of the
schema (``workflow/schemas/config.schema.yaml``, checked against the registry by
the tests). Config validation, expansion into variants, the model, the training
loop, the tables and the deck all read the registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from .adapter import ADAPTER
from .baselines import FROZEN, FULL, PARTIAL
from .bitfit import BITFIT
from .family import LATENCY_MODES, Family, StepHook
from .lora import LORA
from .matched_filter import MATCHED_FILTER
from .peft import PEFT
from .prompt import PROMPT

if TYPE_CHECKING:
    from torch import nn

    from ..variants import Variant

__all__ = ["FAMILIES", "LATENCY_MODES", "Family", "StepHook", "apply_variant", "family", "family_of_key", "method_families", "register",
           "sort_key", "table_columns", "what_trains"]

FAMILIES: dict[str, Family] = {}


def register(new: Family) -> Family:
    """Add `new` to the registry after the families already there; returns it."""
    if not new.name or new.name in FAMILIES:
        raise ValueError(f"a method family needs a name of its own (got {new.name!r}; registered: {', '.join(FAMILIES)})")
    FAMILIES[new.name] = new
    return new


for _builtin in (FULL, FROZEN, PARTIAL, LORA, BITFIT, ADAPTER, PROMPT, PEFT, MATCHED_FILTER):
    register(_builtin)


def family(name: str) -> Family:
    """The registered family `name`; ConfigError naming it and the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConfigError(f"unknown method family {name!r} (known: {', '.join(FAMILIES)})") from None


def family_of_key(key: str) -> Family:
    """The family a key under train.variants configures (``lora-all``: lora); ConfigError naming the key otherwise."""
    found = next((f for f in FAMILIES.values() if f.matches(key)), None)
    if found is None:
        raise ConfigError(f"invalid config: train.variants.{key}: no method family is configured by this key (known: {', '.join(FAMILIES)})")
    return found


def apply_variant(model: "nn.Module", variant: "Variant") -> "nn.Module":
    """Set what trains on the classifier for `variant` (its family's :meth:`Family.apply`). Returns the model to train."""
    return family(variant.family).apply(model, variant)


def what_trains(record: dict) -> str:
    """What trains in a variant, for the deck: `record` has 'family' and the family's parameters (a table's row will do)."""
    return family(record["family"]).trains(record)


def sort_key(record: dict) -> tuple:
    """Display order of a variant `record` ('family', 'config_key' and its parameters): family, then its plain key first, then its own order."""
    found = family(record["family"])
    return (list(FAMILIES).index(found.name), record["config_key"] != found.name, record["config_key"], *found.sort_key(record))


def table_columns() -> tuple[str, ...]:
    """The family parameters the tables show, one column each, in family order (rank, bottleneck, peft_type, ...)."""
    return tuple(dict.fromkeys(c for f in FAMILIES.values() for c in f.columns))


def method_families() -> tuple[str, ...]:
    """The families compared on the deck's methods slide (not the baselines), in family order."""
    return tuple(name for name, f in FAMILIES.items() if f.method)
