"""The same config gives the same bytes: base model and features, in two experiments built apart."""

from __future__ import annotations

import hashlib
from pathlib import Path

from transformers import WhisperConfig, WhisperForConditionalGeneration

from conftest import tiny_config
from gwlora.base_model import prepare
from gwlora.dataset import build_split, save_split
from gwlora.features import extract_split


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_pretrained_encoder_gives_byte_identical_base_models(tmp_path):
    # a Whisper checkpoint without the classifier's projector and classifier: from_pretrained draws them at random
    source = tmp_path / "whisper-source"
    config = WhisperConfig(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                           encoder_ffn_dim=64, decoder_ffn_dim=64)
    WhisperForConditionalGeneration(config).save_pretrained(source)
    from transformers import WhisperFeatureExtractor

    WhisperFeatureExtractor().save_pretrained(source)
    model = {**tiny_config()["model"], "pretrained": str(source)}
    prepare(model, 0, tmp_path / "a" / "base_model")
    prepare(model, 1, tmp_path / "b" / "base_model")  # another experiment seed: the encoder's bytes must not depend on it
    a, b = digests(tmp_path / "a" / "base_model"), digests(tmp_path / "b" / "base_model")
    assert "model.safetensors" in a and a == b


def test_two_experiments_with_the_same_settings_get_identical_data_model_and_features(tmp_path):
    config = tiny_config()
    for experiment in ("one", "two"):
        root = tmp_path / experiment
        prepare(config["model"], config["seed"], root / "base_model")
        ds, record = build_split(config["data"], config["seed"], "val")
        save_split(ds, record, root / "data" / "val")
        extract_split(root / "data" / "val", root / "base_model", root / "features" / "val", batch_size=16)
    for folder in ("base_model", "features/val"):
        assert digests(tmp_path / "one" / folder) == digests(tmp_path / "two" / folder), folder
