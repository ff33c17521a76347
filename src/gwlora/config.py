"""Configuration: strict validation against the workflow schema and variant expansion.

The Snakefile calls :func:`validate` on the loaded config before the DAG is
built (:func:`load_and_validate` does the same from a file, for the tools), so
a misspelt key, a wrong type, an empty list or settings the physics or the
encoder cannot support stop the workflow with a message naming the key,
before any job runs or any file is written. The schema fills in every default;
stages index the validated config and never restate a default.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from .constants import (
    AUDIO_SOURCES, SPLITS, WHISPER_CHUNK_SECONDS, WHISPER_FRAMES_PER_SECOND, WHISPER_FULL_FRAMES,
    WHISPER_N_MELS,
)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key."""


def _key_path(path) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "<top level>"


def _with_defaults(validator_class):
    """Extend a jsonschema validator so that it fills in `default` values, and takes no float (16.0) for an integer."""
    import jsonschema

    validate_properties = validator_class.VALIDATORS["properties"]
    strict_integers = validator_class.TYPE_CHECKER.redefine(
        "integer", lambda checker, instance: isinstance(instance, int) and not isinstance(instance, bool)
    )

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    def pattern_to_the_end(validator, pattern, instance, schema):
        # JSON Schema patterns are ECMA-262 regexes, where `$` is the end of the string; in Python's re it
        # also matches before a final newline, so "demo\n" would pass "^[a-z]+$".
        if isinstance(instance, str) and not re.search(re.sub(r"(?<!\\)\$$", r"\\Z", pattern), instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")

    return jsonschema.validators.extend(
        validator_class, {"properties": set_defaults, "pattern": pattern_to_the_end}, type_checker=strict_integers
    )


def load_schema(path: str | Path) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def _describe(error) -> str:
    where = _key_path(error.absolute_path)
    if error.validator == "type" and error.validator_value == "integer" and isinstance(error.instance, float):
        return f"{where} must be a whole number written without a decimal point (got {error.instance!r})"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        keys = ", ".join(f"{where}.{k}" if error.absolute_path else k for k in extra)
        return f"unknown key {keys} (allowed here: {', '.join(allowed)})"
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator in ("minItems", "minProperties"):
        return f"{where} must not be empty (got {error.instance!r})"
    if error.validator == "maxLength":
        return f"{where}: {len(error.instance)} characters, more than the {error.validator_value} allowed (got {error.instance[:40]!r}...)"
    return f"{where}: {error.message}"


def _check_finite(value, path: tuple = ()) -> None:
    """Refuse NaN and infinities anywhere in the config (scalars, lists, test-set overrides, peft keyword arguments).

    Every comparison with NaN is false, so the schema's bounds let it through, and
    ``.inf`` passes every lower bound: one walk after the schema catches both.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"invalid config: {_key_path(path)}: {value} is not a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_finite(item, (*path, i))


def validate(config: dict, schema: dict) -> dict:
    """Validate `config` in place (filling defaults, keeping only the active data source's settings) and return it.

    Raises ConfigError naming the first offending key.
    """
    import jsonschema  # here, so that the model and training modules import without it (e.g. a bare GPU box)

    validator_class = _with_defaults(jsonschema.validators.validator_for(schema))
    validator = validator_class(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise ConfigError("invalid config: " + _describe(errors[0]))
    _check_finite(config)
    _check_semantics(config)
    test_sets = config["evaluation"]["test_sets"]
    for name in list(test_sets):
        test_sets[name] = _shifted_data(config, schema, name)
    config["data"] = source_settings(config["data"])
    return config


# --------------------------------------------------------------------------- shifted test sets

SHIFT_PREFIX = "shift-"  # a shifted test set's split name: its data and features folders, its wildcard


def deep_merge(base: dict, override: dict) -> dict:
    """`base` with `override` merged in key by key (mappings merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


def _channels(data: dict) -> int:
    return 1 if data["source"] in AUDIO_SOURCES else len(data["detectors"])


def _shifted_data(config: dict, schema: dict, name: str) -> dict:
    """The full, validated `data` section of test set `name`: the training data with its overrides merged in.

    Errors name the test set's key (``evaluation.test_sets.<name>.snr.min``). The
    result is itself a valid override (merging it again changes nothing), so
    validating a validated config is a no-op.
    """
    where = f"evaluation.test_sets.{name}"
    override = config["evaluation"]["test_sets"][name]
    merged = deep_merge(config["data"], override)
    sub = copy.deepcopy({**config, "data": merged, "evaluation": {"test_sets": {}}})
    try:
        validate(sub, schema)
    except ConfigError as exc:
        raise ConfigError(re.sub(r"\bdata\.", f"{where}.", str(exc))) from None
    data, train = sub["data"], source_settings(config["data"])
    unread = [k for k in override if k not in data]
    if unread:
        raise ConfigError(f"invalid config: {where}.{unread[0]}: data.source {data['source']} does not read it, so it would shift nothing")
    if _channels(data) != _channels(train) or data["window_seconds"] != train["window_seconds"]:
        raise ConfigError(
            f"invalid config: {where}: its windows ({_channels(data)} channel(s) of {data['window_seconds']} s) must have the "
            f"shape of the training windows ({_channels(train)} channel(s) of {train['window_seconds']} s) that the runs were trained on"
        )
    if data["source"] == "gwosc" and train["source"] == "gwosc":
        for split in ("train", "val"):
            for a in data["gwosc"]["segments"]["test"]:
                for b in train["gwosc"]["segments"][split]:
                    if a[0] < b[1] and b[0] < a[1]:
                        raise ConfigError(
                            f"invalid config: {where}.gwosc.segments.test {list(a)} overlaps data.gwosc.segments.{split} "
                            f"{list(b)}: the test set would share noise with the training data"
                        )
    return data


def seed_of_test_set(seed: int, name: str) -> int:
    """The data seed of test set `name`: a stable function of the config's seed and the name, never the seed itself."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}/test-set/{name}".encode()).digest()[:4], "big")


def shifted_splits(config: dict) -> list[str]:
    """The split names of the configured shifted test sets (``shift-<name>``)."""
    return [SHIFT_PREFIX + name for name in config["evaluation"]["test_sets"]]


def split_source(config: dict, split: str) -> tuple[dict, int, str]:
    """(data section, data seed, split to build) of one of the experiment's data sets: a split, or ``shift-<name>``."""
    if split in SPLITS:
        return config["data"], config["seed"], split
    name = split.removeprefix(SHIFT_PREFIX)
    if not split.startswith(SHIFT_PREFIX) or name not in config["evaluation"]["test_sets"]:
        raise ConfigError(f"unknown data set {split!r} (the splits {', '.join(SPLITS)} and {', '.join(shifted_splits(config)) or 'no test sets'})")
    data = config["evaluation"]["test_sets"][name]
    # Audio sources split a folder by the seed: the experiment's seed keeps a test set drawn from the training
    # folder inside its test split (windows no run trained on); another folder holds other windows anyway.
    seed = config["seed"] if data["source"] in AUDIO_SOURCES else seed_of_test_set(config["seed"], name)
    return data, seed, "test"


def _check_range(section: dict, key: str, where: str = "data") -> None:
    value = section[key]
    if value["min"] > value["max"]:
        raise ConfigError(f"invalid config: {where}.{key}: min ({value['min']}) > max ({value['max']})")


# The `data` keys each source reads; validate() passes on only the active source's, so the settings of another
# source never reach its rules (a change there re-runs nothing) or its deck.
COMMON_DATA_KEYS = ("source", "splits", "window_seconds")
INJECTION_DATA_KEYS = ("detectors", "sample_rate", "segment_seconds", "band", "signal_fraction", "snr", "injection")
SOURCE_DATA_KEYS = {
    "simulated": (*INJECTION_DATA_KEYS, "psd", "gps_start"),
    "gwosc": (*INJECTION_DATA_KEYS, "gwosc"),
    "hub": ("hub",),
    "audiofolder": ("audiofolder",),
}


def source_settings(data: dict) -> dict:
    """The `data` section reduced to the keys its source reads (:data:`SOURCE_DATA_KEYS`)."""
    keep = (*COMMON_DATA_KEYS, *SOURCE_DATA_KEYS[data["source"]])
    return {k: v for k, v in data.items() if k in keep}


def _check_strain(data: dict) -> None:
    """Checks of the strain sources (simulated, gwosc): ranges, the band, the whitening margin, the physics."""
    _check_range(data, "snr")
    _check_range(data, "band")
    _check_range(data["injection"], "masses", "data.injection")
    _check_range(data["injection"], "merger_position", "data.injection")
    nyquist = data["sample_rate"] / 2
    if data["band"]["max"] >= nyquist:
        raise ConfigError(
            f"invalid config: data.band.max ({data['band']['max']} Hz) must be below the "
            f"Nyquist frequency of data.sample_rate ({nyquist} Hz)"
        )
    if data["segment_seconds"] < data["window_seconds"] + 1:
        raise ConfigError(
            f"invalid config: data.segment_seconds ({data['segment_seconds']}) must exceed "
            f"data.window_seconds ({data['window_seconds']}) by at least 1 s of whitening margin"
        )
    _check_physics(data)
    if data["source"] == "gwosc":
        _check_gwosc(data)
    for split, n in data["splits"].items():
        n_signal = round(n * data["signal_fraction"])
        if n_signal == 0 or n_signal == n:
            raise ConfigError(
                f"invalid config: data.splits.{split} ({n}) with data.signal_fraction "
                f"({data['signal_fraction']}) leaves one class only"
            )


def _check_semantics(config: dict) -> None:
    """Checks that a JSON schema cannot express."""
    data = config["data"]
    if data["source"] in AUDIO_SOURCES:
        if data.get(data["source"]) is None:
            raise ConfigError(f"invalid config: data.{data['source']} is required when data.source is {data['source']}")
    else:
        _check_strain(data)
    frames = data["window_seconds"] * WHISPER_FRAMES_PER_SECOND
    if abs(frames - round(frames)) > 1e-9 or round(frames) % 2:
        raise ConfigError(
            f"invalid config: data.window_seconds ({data['window_seconds']}) must be a multiple of 0.02 s "
            "so that the clip fills a whole number of Whisper encoder positions"
        )
    if data["window_seconds"] > WHISPER_CHUNK_SECONDS:
        raise ConfigError(f"invalid config: data.window_seconds ({data['window_seconds']}) exceeds Whisper's 30 s")

    if config["train"]["compile"] is False:  # YAML 1.1 reads a bare `off` as false
        config["train"]["compile"] = "off"
    _check_contexts(config["model"], data["window_seconds"])
    _check_model_fits(config)
    _check_prompt(config)
    _check_peft_families(config)
    expand_variants(config["train"], config["model"])  # learning rates that would name two runs alike


# --------------------------------------------------------------------------- encoder context


def context_seconds(context: str) -> float | None:
    """The duration a `model.context` names in seconds ("2s" -> 2.0, "30s" -> 30.0), or None for ``clip``."""
    return None if context == "clip" else float(context[:-1])


def context_frames(context: str, clip_frames: int) -> int:
    """Log-mel frames the encoder sees under `context`: the clip's own, or the duration's (100 a second)."""
    seconds = context_seconds(context)
    return clip_frames if seconds is None else round(seconds * WHISPER_FRAMES_PER_SECOND)


def contexts(model: dict) -> list[str]:
    """The contexts of `model.context`: one, or the listed ones (a variant axis)."""
    value = model["context"]
    return list(value) if isinstance(value, list) else [value]


def _check_contexts(model: dict, window_seconds: float) -> None:
    """Every context a whole number of encoder positions, no shorter than the clip and no longer than Whisper's 30 s."""
    listed = isinstance(model["context"], list)
    if listed and len(model["context"]) == 1:
        model["context"] = model["context"][0]  # one context: as if written alone (the run ids carry no suffix)
        listed = False
    durations: dict[int, str] = {}  # frames -> the key that listed them: 2s and 2.0s are one context
    for i, context in enumerate(contexts(model)):
        key = f"model.context.{i}" if listed else "model.context"
        seconds = context_seconds(context)
        if seconds is None:
            continue
        frames = seconds * WHISPER_FRAMES_PER_SECOND
        if abs(frames - round(frames)) > 1e-9 or round(frames) % 2:
            raise ConfigError(f"invalid config: {key} ({context}) must be a multiple of 0.02 s, a whole number of encoder positions")
        if seconds < window_seconds:
            raise ConfigError(f"invalid config: {key} ({context}) is shorter than the clip, data.window_seconds ({window_seconds} s); use clip")
        if round(frames) > WHISPER_FULL_FRAMES:
            raise ConfigError(f"invalid config: {key} ({context}) exceeds Whisper's {WHISPER_CHUNK_SECONDS} s of positions")
        if round(frames) in durations:
            raise ConfigError(
                f"invalid config: {key} ({context}) is the duration of {durations[round(frames)]} again ({seconds:g} s): "
                "it would train every variant twice; list each context once"
            )
        durations[round(frames)] = f"{key} ({context})"


def run_model_config(model: dict, variant: "Variant") -> dict:
    """The `model` section one run trains with: its variant's context when the config lists several."""
    return model if variant.context is None else {**model, "context": variant.context}


def looks_like_path(name: str) -> bool:
    """Whether model.pretrained names a local directory rather than a hub id ("org/name").

    A path starts with ``.``, ``/`` or ``~``, or it exists, or its first component
    is an existing folder (``models/whisper-small`` beside a ``models/`` folder).
    """
    path = Path(name).expanduser()
    return name.startswith((".", "/", "~")) or path.exists() or (len(path.parts) > 1 and Path(path.parts[0]).is_dir())


def _check_local_model(pretrained: str) -> None:
    path = Path(pretrained).expanduser()
    if not looks_like_path(pretrained):
        return
    if not path.is_dir():
        raise ConfigError(
            f"invalid config: model.pretrained: local encoder directory {pretrained!r} does not exist. Save one with "
            "transformers (WhisperForAudioClassification.from_pretrained('openai/whisper-small').save_pretrained(DIR) "
            "and WhisperFeatureExtractor likewise) on a machine with internet, give a hub id, or use null for the "
            "random demo encoder (config/demo.yaml)"
        )
    if not (path / "config.json").is_file():
        raise ConfigError(f"invalid config: model.pretrained: {pretrained!r} has no config.json, so it is not a Hugging Face model directory")


def encoder_shape(model: dict) -> tuple[int, int, int, int] | None:
    """(d_model, encoder layers, FFN width, mel bins) of the configured encoder when known before any download, else None."""
    if model["pretrained"] is None:
        cfg = model["random_init"]
    else:
        local = Path(model["pretrained"]).expanduser() / "config.json"
        if not local.is_file():
            return None  # a hub id: checked when the model is loaded
        import json

        cfg = json.loads(local.read_text())
    d = int(cfg["d_model"])
    return d, int(cfg["encoder_layers"]), int(cfg.get("encoder_ffn_dim", 4 * d)), int(cfg.get("num_mel_bins", WHISPER_N_MELS))


def _check_model_fits(config: dict) -> None:
    model = config["model"]
    if model["pretrained"] is not None:
        _check_local_model(model["pretrained"])
    if model["pretrained"] is None:
        init = model["random_init"]
        if init["d_model"] % init["encoder_attention_heads"]:
            raise ConfigError(
                f"invalid config: model.random_init.d_model ({init['d_model']}) is not divisible by "
                f"model.random_init.encoder_attention_heads ({init['encoder_attention_heads']})"
            )
    shape = encoder_shape(model)
    if shape is None:
        return
    width, layers = shape[:2]
    source = "model.random_init" if model["pretrained"] is None else f"the encoder in {model['pretrained']}"
    variants = config["train"]["variants"]
    partial = variants.get("partial")
    if partial and partial["layers"] > layers:
        raise ConfigError(
            f"invalid config: train.variants.partial.layers ({partial['layers']}) exceeds "
            f"the {layers} encoder_layers of {source}"
        )
    for key in lora_keys(config["train"]):
        ranks = variants[key]["ranks"]
        if max(ranks) > width:
            raise ConfigError(
                f"invalid config: train.variants.{key}.ranks: rank {max(ranks)} exceeds the layer "
                f"width d_model {width} of {source}"
            )
    adapter = variants.get("adapter")
    if adapter and max(adapter["bottleneck"]) > width:
        raise ConfigError(
            f"invalid config: train.variants.adapter.bottleneck: {max(adapter['bottleneck'])} exceeds the layer "
            f"width d_model {width} of {source}: an adapter's bottleneck is narrower than the layer"
        )


def _check_prompt(config: dict) -> None:
    """With a fixed context (30 s or a duration) the prompts take positions from it: the clip must still fit beside the longest."""
    prompt = config["train"]["variants"].get("prompt")
    if not prompt:
        return
    clip_frames = round(config["data"]["window_seconds"] * WHISPER_FRAMES_PER_SECOND)
    longest = max(prompt["length"])
    for context in contexts(config["model"]):
        if context == "clip":
            continue
        positions = min(context_frames(context, clip_frames), WHISPER_FULL_FRAMES) // 2
        if clip_frames // 2 + longest > positions:
            raise ConfigError(
                f"invalid config: train.variants.prompt.length: {longest} prompt positions and the clip's {clip_frames // 2} exceed "
                f"the {positions} positions of model.context {context}"
            )


def _check_peft_families(config: dict) -> None:
    """Each peft-<tag> family against peft's own config class, and applied once to a one-layer encoder of the configured shape.

    An unknown type, a prompt-learning type, a key its config class does not have (or one gwlora sets),
    a value it rejects, or a method that cannot adapt the encoder's linear layers stops here, naming the key.
    """
    keys = peft_keys(config["train"])
    if not keys:
        return
    import dataclasses

    import peft
    from peft.config import PromptLearningConfig
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    known = {str(getattr(t, "value", t)): cls for t, cls in PEFT_TYPE_TO_CONFIG_MAPPING.items()}
    for key in keys:
        spec, where = config["train"]["variants"][key], f"train.variants.{key}"
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
        if "target_modules" not in fields:
            raise ConfigError(f"invalid config: {where}.type: {kind} has no target_modules, so it cannot target the encoder's linear layers")
        if "modules_to_save" not in fields:
            raise ConfigError(f"invalid config: {where}.type: {kind} has no modules_to_save, so the classifier's head cannot train beside it")
        for name in spec:
            if name in PEFT_RESERVED_KEYS:
                raise ConfigError(f"invalid config: {where}.{name}: set by gwlora (the head is in modules_to_save), not configurable")
            if name not in fields and name not in ("type", "lr"):
                allowed = sorted(fields - set(PEFT_RESERVED_KEYS))
                raise ConfigError(f"invalid config: unknown key {where}.{name} for peft's {cls.__name__} (allowed here: type, lr, {', '.join(allowed)})")
        kwargs = peft_kwargs(spec)
        try:
            peft_config = cls(**kwargs, modules_to_save=["head"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid config: {where}: peft's {cls.__name__} rejects it: {exc}") from None
        from .model import probe_peft  # torch and transformers: only when a peft family is configured

        problem = probe_peft(peft_config, encoder_shape(config["model"]))
        if problem:
            raise ConfigError(
                f"invalid config: {where}: peft cannot apply {kind} to the encoder's linear layers "
                f"(target_modules {kwargs['target_modules']}): {problem}"
            )


def _check_gwosc(data: dict) -> None:
    gwosc = data.get("gwosc")
    if gwosc is None:
        raise ConfigError("invalid config: data.gwosc is required when data.source is gwosc")
    spans = []
    for split in SPLITS:
        for i, (start, end) in enumerate(gwosc["segments"][split]):
            if start >= end:
                raise ConfigError(f"invalid config: data.gwosc.segments.{split}.{i}: start ({start}) >= end ({end})")
            spans.append((start, end, f"data.gwosc.segments.{split}.{i}", split))
    for a in spans:
        for b in spans:
            if a[3] < b[3] and a[0] < b[1] and b[0] < a[1]:
                raise ConfigError(f"invalid config: {a[2]} {list(a[:2])} overlaps {b[2]} {list(b[:2])}: splits would share noise")
    if data["sample_rate"] > gwosc["source_sample_rate"]:
        raise ConfigError(
            f"invalid config: data.sample_rate ({data['sample_rate']}) exceeds data.gwosc.source_sample_rate "
            f"({gwosc['source_sample_rate']})"
        )


def _check_physics(data: dict) -> None:
    """The lalsimulation models the config names exist (imported lazily: LALSuite is large)."""
    from . import gw
    from .cli import StageError

    checks = {
        "data.injection.approximant": lambda: gw.approximant(data["injection"]["approximant"]),
        "data.psd": lambda: gw.check_psd_name(data["psd"]),
        "data.injection": lambda: gw.check_injection(data["injection"], data["sample_rate"]),
    }
    for key, check in checks.items():
        try:
            check()
        except StageError as exc:
            raise ConfigError(f"invalid config: {key}: {exc}") from None


def load_and_validate(path: str | Path, schema_path: str | Path) -> dict:
    path = Path(path)
    try:
        with open(path) as fh:
            config = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys")
    try:
        return validate(config, load_schema(schema_path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------- variants


ENCODER_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@dataclass(frozen=True)
class Variant:
    """One training configuration of the classifier: a compared variant at one learning rate."""

    name: str  # the compared variant (full, lora-r8, ...): a row of the tables
    family: str  # one of FAMILY_ORDER
    lr: float
    run: str = ""  # its runs' wildcard and folder: the name, plus /lr<lr> when its family lists several lrs
    config_key: str = ""  # its key under train.variants: lora, lora-all, ... (= family for the others)
    layers: int | None = None  # partial: top-k encoder layers that train
    rank: int | None = None  # lora
    alpha: float | None = None
    target_modules: tuple[str, ...] = ()
    dropout: float = 0.0
    rslora: bool = False  # scale by alpha/sqrt(r) instead of alpha/r
    dora: bool = False
    context: str | None = None  # when model.context lists several: this variant's (its name ends in -ctx<context>)
    bottleneck: int | None = None  # adapter: the bottleneck width b
    adapter_style: str | None = None  # adapter: houlsby | pfeiffer
    prompt_length: int | None = None  # prompt: learned vectors prepended to the encoder's sequence
    peft_type: str | None = None  # peft: the PeftType (IA3, VERA, LOHA, ...)
    peft_config: dict | None = None  # peft: the keyword arguments of its peft config class, as configured

    def __post_init__(self):
        if not self.run:
            object.__setattr__(self, "run", self.name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        if d["context"] is None:
            del d["context"]  # a single context: the record of runs made before the context axis, unchanged
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Variant":
        d = dict(d)
        d["target_modules"] = tuple(d.get("target_modules", ()))
        return cls(**d)


FAMILY_ORDER = ("full", "frozen", "partial", "lora", "bitfit", "adapter", "prompt", "peft")
# Families whose trained model is the base architecture (weights changed, nothing added): their latency is the base's
BASE_ARCHITECTURE = ("full", "frozen", "partial")
# Families whose best checkpoint is a peft adapter (save_pretrained), and whose merged latency peft can measure
PEFT_FAMILIES = ("lora", "peft")
# peft config fields that gwlora sets (modules_to_save=["head"]) or that describe a saved adapter, not the method
PEFT_RESERVED_KEYS = ("peft_type", "task_type", "modules_to_save", "base_model_name_or_path", "revision",
                      "inference_mode", "auto_mapping", "peft_version")
# target_modules of a peft method configured without them: LoRA's (the paper's W_q and W_v)
PEFT_DEFAULT_TARGETS = ["q_proj", "v_proj"]


def lora_keys(train: dict) -> list[str]:
    """The LoRA family keys of `train.variants`: lora first, then lora-* in config order."""
    keys = [k for k in train["variants"] if k == "lora" or k.startswith("lora-")]
    return sorted(keys, key=lambda k: k != "lora")


def peft_keys(train: dict) -> list[str]:
    """The peft-<tag> family keys of `train.variants`, in config order."""
    return [k for k in train["variants"] if k.startswith("peft-")]


def peft_kwargs(spec: dict) -> dict:
    """A peft-<tag> family's keyword arguments for its peft config class (type and lr are ours), target_modules defaulted."""
    kwargs = {k: v for k, v in spec.items() if k not in ("type", "lr")}
    kwargs.setdefault("target_modules", list(PEFT_DEFAULT_TARGETS))
    return kwargs


def learning_rates(spec: dict, train: dict) -> list[float]:
    """A family's learning rates: its own `lr` (a number or a list), else train.lr's."""
    value = spec.get("lr", train["lr"])
    return list(value) if isinstance(value, list) else [value]


def run_id(name: str, lr: float, grid: bool) -> str:
    """A run's wildcard and folder below runs/: the variant's name alone for a single lr (as before grids)."""
    return f"{name}/lr{lr:g}" if grid else name


def context_suffix(context: str) -> str:
    """The variant-name suffix of a context on the context axis: -ctxclip, -ctx2s, -ctx2.5s (safe in paths and wildcards)."""
    return f"-ctx{context}"


def expand_variants(train: dict, model: dict | None = None) -> dict[str, Variant]:
    """Expand `train.variants` into one Variant per (variant, context, lr), keyed by run id, in a stable display order.

    Contexts multiply the variants only when `model` lists several (``model.context: [clip, 2s, 30s]``):
    each variant then runs at each, named ``<variant>-ctx<context>``; one context names nothing.
    """
    families = train["variants"]
    planned: list[tuple[dict, dict]] = []  # (family spec, Variant fields)
    for family in ("full", "frozen"):
        if family in families:
            planned.append((families[family], {"name": family, "family": family, "config_key": family}))
    if "partial" in families:
        spec = families["partial"]
        k = spec["layers"]
        planned.append((spec, {"name": f"partial-top{k}", "family": "partial", "config_key": "partial", "layers": k}))
    for key in lora_keys(train):
        spec = families[key]
        targets = spec["target_modules"]
        for r in spec["ranks"]:
            planned.append((spec, {
                "name": f"{key}-r{r}",
                "family": "lora",
                "config_key": key,
                "rank": r,
                "alpha": float(spec["alpha"] if spec["alpha"] is not None else spec["ranks"][0]),
                "target_modules": ENCODER_LINEAR_MODULES if targets == "all-linear" else tuple(targets),
                "dropout": spec["dropout"],
                "rslora": spec["scaling"] == "alpha/sqrt(r)",
                "dora": spec["dora"],
            }))
    if "bitfit" in families:
        planned.append((families["bitfit"], {"name": "bitfit", "family": "bitfit", "config_key": "bitfit"}))
    if "adapter" in families:
        spec = families["adapter"]
        for b in spec["bottleneck"]:
            planned.append((spec, {"name": f"adapter-b{b}", "family": "adapter", "config_key": "adapter",
                                   "bottleneck": b, "adapter_style": spec["style"]}))
    if "prompt" in families:
        spec = families["prompt"]
        for n in spec["length"]:
            planned.append((spec, {"name": f"prompt-l{n}", "family": "prompt", "config_key": "prompt", "prompt_length": n}))
    for key in peft_keys(train):
        spec = families[key]
        planned.append((spec, {"name": key, "family": "peft", "config_key": key,
                               "peft_type": spec["type"].upper(), "peft_config": peft_kwargs(spec)}))
    axis = contexts(model) if model is not None and isinstance(model["context"], list) else []
    if axis:
        planned = [(spec, {**fields, "name": fields["name"] + context_suffix(c), "context": c}) for spec, fields in planned for c in axis]
    out: dict[str, Variant] = {}
    for spec, fields in planned:
        lrs = learning_rates(spec, train)
        for lr in lrs:
            run = run_id(fields["name"], lr, len(lrs) > 1)
            if run in out:
                raise ConfigError(f"invalid config: learning rates of {fields['name']} that print alike ({run}); list distinct values")
            out[run] = Variant(lr=lr, run=run, **fields)
    return out
