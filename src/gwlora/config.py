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
from pathlib import Path

import yaml

from . import families
from .constants import AUDIO_SOURCES, SPLITS, WHISPER_CHUNK_SECONDS, WHISPER_FRAMES_PER_SECOND, WHISPER_FULL_FRAMES
from .encoder import ENCODER_LINEAR_MODULES, context_frames, context_seconds, context_suffix, contexts, encoder_shape
from .errors import ConfigError
from .lr_search import check_grids, extension_variants
from .variants import Variant

__all__ = [  # besides this module's own: what the stages import from here
    "ConfigError", "ENCODER_LINEAR_MODULES", "Variant",
    "context_frames", "context_seconds", "context_suffix", "contexts", "encoder_shape",
]


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


def validate(config: dict, schema: dict, probe_libraries: bool = True) -> dict:
    """Validate `config` in place (filling defaults, keeping only the active data source's settings) and return it.

    Raises ConfigError naming the first offending key. ``probe_libraries=False`` leaves out the family checks
    that import a library to probe it (peft: seconds of torch and transformers imports), for a process whose
    parent validated the same config: a Snakemake job step on a cluster node re-reads the Snakefile per job.
    """
    import jsonschema  # here, so that the model and training modules import without it (e.g. a bare GPU box)

    validator_class = _with_defaults(jsonschema.validators.validator_for(schema))
    validator = validator_class(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise ConfigError("invalid config: " + _describe(errors[0]))
    _check_finite(config)
    _check_semantics(config, probe_libraries)
    test_sets = config["evaluation"]["test_sets"]
    for name in list(test_sets):
        test_sets[name] = _shifted_data(config, schema, name, probe_libraries)
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


def _shifted_data(config: dict, schema: dict, name: str, probe_libraries: bool = True) -> dict:
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
        validate(sub, schema, probe_libraries)
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


def _check_semantics(config: dict, probe_libraries: bool = True) -> None:
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
    _check_model_fits(config, probe_libraries)
    variants = expand_variants(config["train"], config["model"])  # learning rates that would name two runs alike
    if config["train"]["lr_search"]["extend"]:
        check_grids(variants)
        extension_variants(variants, config["train"]["lr_search"]["max_extensions"])  # an added rate the grid already runs


# --------------------------------------------------------------------------- encoder context


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


def matching_hub_id(path: Path) -> str:
    """The hub model a local directory's name points to ("whisper-tiny.en-encoder" -> "openai/whisper-tiny.en"), else Whisper small."""
    size = re.match(r"whisper-(tiny|base|small|medium|large)(\.en)?", path.name)
    return f"openai/{size.group(0)}" if size else "openai/whisper-small"


def _check_local_model(pretrained: str) -> None:
    path = Path(pretrained).expanduser()
    if not looks_like_path(pretrained):
        return
    if not path.is_dir():
        raise ConfigError(
            f"invalid config: model.pretrained: local encoder directory {pretrained!r} ({path.resolve()}) does not exist. "
            f"Save one with transformers (WhisperForAudioClassification.from_pretrained({matching_hub_id(path)!r}).save_pretrained(DIR) "
            "and WhisperFeatureExtractor likewise) on a machine with internet, give a hub id, or use null for the "
            "random demo encoder (config/demo.yaml)"
        )
    if not (path / "config.json").is_file():
        raise ConfigError(f"invalid config: model.pretrained: {pretrained!r} has no config.json, so it is not a Hugging Face model directory")


def _check_model_fits(config: dict, probe_libraries: bool = True) -> None:
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
    for key, spec in config["train"]["variants"].items():
        family = families.family_of_key(key)
        if probe_libraries or not family.check_imports:
            family.check(key, spec, config, shape)


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


def learning_rates(spec: dict, train: dict) -> list[float]:
    """A family's learning rates: its own `lr` (a number or a list), else train.lr's."""
    value = spec.get("lr", train["lr"])
    return list(value) if isinstance(value, list) else [value]


def run_id(name: str, lr: float, grid: bool) -> str:
    """A run's wildcard and folder below runs/: the variant's name alone for a single lr (as before grids)."""
    return f"{name}/lr{lr:g}" if grid else name


def expand_variants(train: dict, model: dict | None = None) -> dict[str, Variant]:
    """Expand `train.variants` into one Variant per (variant, context, lr), keyed by run id, in a stable display order.

    Contexts multiply the variants only when `model` lists several (``model.context: [clip, 2s, 30s]``):
    each variant then runs at each, named ``<variant>-ctx<context>``; one context names nothing.
    """
    configured = train["variants"]
    for key in configured:
        families.family_of_key(key)  # a key no family reads stops here, before it can name a run
    planned: list[tuple[dict, dict]] = []  # (family spec, Variant fields)
    for family in families.FAMILIES.values():
        for key in family.keys(configured):
            for name, params in family.expand(key, configured[key]):
                planned.append((configured[key], {"name": name, "family": family.name, "config_key": key, "params": params}))
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
