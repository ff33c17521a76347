"""Stage `base_model`: fetch (or build) the Whisper encoder every run starts from.

Writes one Hugging Face model directory (``save_pretrained`` of a
``WhisperForAudioClassification``, whose encoder is all that training uses, and
the matching ``WhisperFeatureExtractor``), plus ``base_model.json`` describing
where it came from. This is the only stage that may touch the network (a hub
id); every later stage reads the local copy, so all variants and seeds start
from the very same weights, and compute nodes need no internet.

With ``model.pretrained: null`` it builds a small random-initialised Whisper
from ``model.random_init`` (seeded), which needs no download: the offline demo.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from .cli import StageError, atomic_dir, json_arg, read_json, run_stage, write_json

log = logging.getLogger("gwlora.base_model")

RECORD = "base_model.json"
UNUSED_HEAD_SEED = 0  # see prepare()

if TYPE_CHECKING:
    from transformers import WhisperFeatureExtractor, WhisperForAudioClassification
# torch and transformers are imported where a model is built: reading base_model.json (load_record) stays cheap
# for the stages that need only the record (aggregate, the deck), which would otherwise pay seconds of imports.


def build_random(random_init: dict, seed: int) -> tuple[WhisperForAudioClassification, WhisperFeatureExtractor]:
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForAudioClassification

    config = WhisperConfig(
        d_model=random_init["d_model"],
        encoder_layers=random_init["encoder_layers"],
        encoder_attention_heads=random_init["encoder_attention_heads"],
        encoder_ffn_dim=random_init["encoder_ffn_dim"],
        num_mel_bins=random_init["num_mel_bins"],
        init_std=random_init["init_std"],
        decoder_layers=1,
        decoder_attention_heads=random_init["encoder_attention_heads"],
        decoder_ffn_dim=random_init["encoder_ffn_dim"],
        num_labels=2,
    )
    torch.manual_seed(seed)
    model = WhisperForAudioClassification(config)
    return model, WhisperFeatureExtractor(feature_size=random_init["num_mel_bins"])


def hub_unreachable_reason(timeout: float = 5.0) -> str | None:
    """Why the Hugging Face hub cannot be asked for files (offline mode, no connection), or None when it answers."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as exc:
        return f"{constants.ENDPOINT} cannot be reached: {getattr(exc, 'reason', exc)}"
    return None


def _load(name: str, **kwargs) -> tuple[WhisperForAudioClassification, WhisperFeatureExtractor]:
    from transformers import WhisperFeatureExtractor, WhisperForAudioClassification

    return WhisperForAudioClassification.from_pretrained(name, num_labels=2, **kwargs), WhisperFeatureExtractor.from_pretrained(name, **kwargs)


def load_pretrained(name: str) -> tuple[WhisperForAudioClassification, WhisperFeatureExtractor]:
    """Load from a local directory, the local hub cache, or the hub (only when it can be reached); errors name the source."""
    if Path(name).expanduser().is_dir():
        try:
            return _load(str(Path(name).expanduser()))
        except OSError as exc:
            raise StageError(f"model.pretrained {name!r}: cannot load Whisper from this local directory: {exc}") from exc
    try:
        return _load(name, local_files_only=True)  # already in the local Hugging Face cache
    except OSError:
        pass
    reason = hub_unreachable_reason()
    if reason:
        raise StageError(
            f"model.pretrained {name!r}: not in the local Hugging Face cache and the hub cannot be asked ({reason}); "
            "run the offline demo (--configfile config/demo.yaml), or download the encoder where there is internet "
            "and set model.pretrained to its local directory"
        )
    try:
        return _load(name)
    except OSError as exc:
        raise StageError(f"model.pretrained {name!r}: cannot load Whisper from the hub: {exc}") from exc


def prepare(model_config: dict, seed: int, out: str | Path) -> dict:
    import torch

    pretrained = model_config["pretrained"]
    if pretrained is None:
        model, extractor = build_random(model_config["random_init"], seed)
        source = "random-init"
    else:
        # A Whisper checkpoint has no projector or classifier: from_pretrained initialises them
        # at random. Training never uses them (only the encoder), but they are saved with it, so
        # they are drawn from a fixed seed: the same encoder gives the same bytes in every experiment.
        torch.manual_seed(UNUSED_HEAD_SEED)
        model, extractor = load_pretrained(pretrained)
        source = pretrained
    encoder_params = sum(p.numel() for p in model.encoder.parameters())
    record = {
        "source": source,
        "random_init": pretrained is None,
        "seed": seed if pretrained is None else None,
        "d_model": model.config.d_model,
        "encoder_layers": model.config.encoder_layers,
        "encoder_attention_heads": model.config.encoder_attention_heads,
        "num_mel_bins": model.config.num_mel_bins,
        "encoder_parameters": encoder_params,
    }
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        extractor.save_pretrained(tmp)
        write_json(Path(tmp) / RECORD, record)
    return record


def load_record(model_dir: str | Path) -> dict:
    path = Path(model_dir) / RECORD
    if not path.exists():
        raise StageError(f"{model_dir} is not a base model made by the base_model stage (no {RECORD})")
    return read_json(path)


def _parser(p):
    p.add_argument("--model-config", type=json_arg, required=True, help="the validated `model` config section, as JSON")
    p.add_argument("--seed", type=int, required=True, help="seed of the random initialisation")
    p.add_argument("--out", required=True, help="output model directory")


def _run(args):
    """Fetch or build the base Whisper encoder."""
    record = prepare(args.model_config, args.seed, args.out)
    kind = "random-initialised (no download)" if record["random_init"] else f"from {record['source']}"
    log.info(
        "wrote %s: Whisper encoder %s, %d layers, d_model %d, %.2f M parameters",
        args.out, kind, record["encoder_layers"], record["d_model"], record["encoder_parameters"] / 1e6,
    )


def main(argv=None) -> int:
    return run_stage("base-model", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
