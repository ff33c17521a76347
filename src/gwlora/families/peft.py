"""Any other peft method on the encoder's linear layers: ``peft-<tag>`` with `type` (IA3, VERA, LOHA, ADALORA, ...).

Its config class is built from the config's keyword arguments (checked against that
class at validation, and applied once to a one-layer encoder of the configured shape),
the head in ``modules_to_save`` as for LoRA.

AdaLoRA reallocates its ranks while it trains: peft's ``update_and_allocate(step)``
after every optimiser step (:class:`AdaLoraAllocation`, the family's step hook), over
the run's own number of steps (its ``total_step``, set by gwlora). The allocator's
importance scores and the rank pattern are saved with the run state, so a resumed run
allocates as the uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json

from ..cli import StageError
from ..errors import ConfigError
from .family import PeftFamily, freeze_encoder

# peft config fields that gwlora sets (modules_to_save=["head"]) or that describe a saved adapter, not the method
PEFT_RESERVED_KEYS = ("peft_type", "task_type", "modules_to_save", "base_model_name_or_path", "revision",
                      "inference_mode", "auto_mapping", "peft_version")
# target_modules of a peft method configured without them: LoRA's (the paper's W_q and W_v)
PEFT_DEFAULT_TARGETS = ["q_proj", "v_proj"]
# peft config fields set from the run's length, by type
RUN_LENGTH_KEYS = {"ADALORA": "total_step"}


def peft_kwargs(spec: dict) -> dict:
    """A peft-<tag> family's keyword arguments for its peft config class (type and lr are ours), target_modules defaulted."""
    kwargs = {k: v for k, v in spec.items() if k not in ("type", "lr")}
    kwargs.setdefault("target_modules", list(PEFT_DEFAULT_TARGETS))
    return kwargs


def config_classes() -> dict:
    """peft's config class of each PeftType name."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return {str(getattr(t, "value", t)): cls for t, cls in PEFT_TYPE_TO_CONFIG_MAPPING.items()}


def peft_config(peft_type: str, kwargs: dict, total_steps: int | None = None):
    """The peft config of a ``peft`` variant: its type's config class, the configured arguments, the head in modules_to_save.

    A type that needs the run's length (AdaLoRA's total_step) gets `total_steps`, or before the run's length is
    known the least its config class accepts (the step hook sets the run's own when training starts).
    """
    extra = {}
    if peft_type in RUN_LENGTH_KEYS:
        extra[RUN_LENGTH_KEYS[peft_type]] = total_steps or kwargs.get("tinit", 0) + kwargs.get("tfinal", 0) + 1
    return config_classes()[peft_type](**kwargs, **extra, modules_to_save=["head"])


def probe_peft(config, shape: tuple[int, int, int, int] | None) -> str | None:
    """Apply a peft config to a one-layer encoder of `shape` (d_model, -, FFN width, mel bins): None if it adapts the encoder, else why not.

    Run at config validation, so a method that cannot adapt the encoder stops the workflow before any job.
    """
    import torch
    from peft import get_peft_model
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from ..constants import WHISPER_N_MELS
    from ..model import StrainClassifier

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


def _config_class(spec: dict, where: str):
    """peft's config class of `spec`'s type, or ConfigError naming why it cannot adapt the encoder's linear layers."""
    import peft
    from peft.config import PromptLearningConfig

    known = config_classes()
    kind = spec["type"].upper()
    cls = known.get(kind)
    if cls is None:
        raise ConfigError(f"invalid config: {where}.type: unknown peft type {spec['type']!r} (peft {peft.__version__} has {', '.join(sorted(known))})")
    if issubclass(cls, PromptLearningConfig):
        raise ConfigError(
            f"invalid config: {where}.type: {kind} is a prompt-learning method: it prepends virtual tokens to a text "
            "model's embeddings and cannot target the encoder's linear layers (the `prompt` family is prompt tuning for this encoder)"
        )
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    for needed, why in (("target_modules", "so it cannot target the encoder's linear layers"),
                        ("modules_to_save", "so the classifier's head cannot train beside it")):
        if needed not in fields:
            raise ConfigError(f"invalid config: {where}.type: {kind} has no {needed}, {why}")
    return cls, fields


class Peft(PeftFamily):
    name = "peft"
    plain_key = False
    pattern = "^peft-[a-z0-9]+(-[a-z0-9]+)*$"
    parameters = ("peft_type", "peft_config")
    columns = ("peft_type",)
    check_imports = True  # peft (and so torch and transformers) to probe the type on a one-layer encoder

    def expand(self, key, spec):
        return [(key, {"peft_type": spec["type"].upper(), "peft_config": peft_kwargs(spec)})]

    def check(self, key, spec, config, shape):
        """The type against peft's own config class, and applied once to a one-layer encoder of the configured shape.

        An unknown type, a prompt-learning type, a key its config class does not have (or one gwlora sets),
        a value it rejects, or a method that cannot adapt the encoder's linear layers stops here, naming the key.
        """
        where = f"train.variants.{key}"
        cls, fields = _config_class(spec, where)
        kind, reserved = spec["type"].upper(), (*PEFT_RESERVED_KEYS, *RUN_LENGTH_KEYS.values())
        for name in spec:
            if name in reserved:
                why = "the run's length" if name in RUN_LENGTH_KEYS.values() else "the head is in modules_to_save"
                raise ConfigError(f"invalid config: {where}.{name}: set by gwlora ({why}), not configurable")
            if name not in fields and name not in ("type", "lr"):
                allowed = sorted(fields - set(reserved))
                raise ConfigError(f"invalid config: unknown key {where}.{name} for peft's {cls.__name__} (allowed here: type, lr, {', '.join(allowed)})")
        kwargs = peft_kwargs(spec)
        try:
            candidate = peft_config(kind, kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid config: {where}: peft's {cls.__name__} rejects it: {exc}") from None
        problem = probe_peft(candidate, shape)
        if problem:
            raise ConfigError(
                f"invalid config: {where}: peft cannot apply {kind} to the encoder's linear layers "
                f"(target_modules {kwargs['target_modules']}): {problem}"
            )

    def apply(self, model, variant):
        from peft import get_peft_model

        freeze_encoder(model)
        p = variant.params
        try:
            return get_peft_model(model, peft_config(p["peft_type"], p["peft_config"]))
        except (ValueError, TypeError, NotImplementedError) as exc:
            raise StageError(f"variant {variant.name}: peft {p['peft_type']} {p['peft_config']}: {exc}") from exc

    def trains(self, record):
        return f"peft {record['peft_type']} + head"

    def step_hook(self, model, variant, total_steps):
        return AdaLoraAllocation(model, variant, total_steps) if variant.params["peft_type"] == "ADALORA" else None

    def before_loading(self, model, variant, best_dir):
        """AdaLoRA saves only the ranks allocated at the checkpoint's step: peft resizes the model by its config's rank pattern, so that is the checkpoint's."""
        if variant.params["peft_type"] == "ADALORA":
            saved = json.loads((best_dir / "adapter_config.json").read_text())
            model.peft_config[model.active_adapter].rank_pattern = saved["rank_pattern"]


class AdaLoraAllocation:
    """AdaLoRA's rank allocation over a run of `total_steps`: peft's ``update_and_allocate`` after each optimiser step.

    Called after ``optimizer.step()`` and before the next ``zero_grad`` (it reads the gradients).
    Its state is what decides the next allocation: the allocator's smoothed importance and
    uncertainty of every adapter weight, and the rank pattern once allocated.
    """

    SCORES = ("ipt", "exp_avg_ipt", "exp_avg_unc")

    def __init__(self, model, variant, total_steps: int):
        self.tuner = model.base_model
        self.config = self.tuner.peft_config[self.tuner.trainable_adapter_name]
        if self.config.tinit + self.config.tfinal >= total_steps:
            raise StageError(
                f"variant {variant.name}: AdaLoRA's tinit ({self.config.tinit}) and tfinal ({self.config.tfinal}) leave "
                f"no step of rank allocation in the run's {total_steps} steps"
            )
        self.tuner.rankallocator.set_total_step(total_steps)  # the allocator shares the adapter's config

    def after_step(self, step: int) -> None:
        self.tuner.update_and_allocate(step)

    def state_dict(self) -> dict:
        allocator = self.tuner.rankallocator
        return {**{name: dict(getattr(allocator, name)) for name in self.SCORES}, "rank_pattern": self.config.rank_pattern}

    def load_state_dict(self, state: dict) -> None:
        device = next(self.tuner.parameters()).device
        for name in self.SCORES:
            setattr(self.tuner.rankallocator, name, {k: v.to(device) for k, v in state[name].items()})
        self.config.rank_pattern = state["rank_pattern"]


PEFT = Peft()
