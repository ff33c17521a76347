"""Cached encoder outputs (gwlora.encoder_cache): a frozen or partial run trains on them and ends where the uncached run ends."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_config, write_toy_features
from gwlora.cli import StageError
from gwlora.encoder_cache import META_FILE, OUTPUTS_FILE, refusal, write_cache
from gwlora.model import build_classifier
from gwlora.records import read_summary
from gwlora.train import train_run
from gwlora.variants import Variant

FROZEN = Variant(name="frozen", family="frozen", lr=1e-3)
PARTIAL = Variant(name="partial-top1", family="partial", lr=1e-3, params={"layers": 1})
TOLERANCE = dict(rel=1e-4, abs=1e-5)  # float32 arithmetic in another order (batch composition), nothing more


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A tiny random encoder and separable toy features (no LALSuite)."""
    from gwlora.base_model import prepare

    root = tmp_path_factory.mktemp("cache")
    config = tiny_config()
    prepare(config["model"], config["seed"], root / "base_model")
    features = write_toy_features(root, {"train": 40, "val": 24, "test": 24})
    return {"root": root, "config": config, "features": features}


def train(toy, variant, out, encoder_outputs=None, **overrides):
    config = toy["config"]
    return train_run(features=toy["features"], model_dir=toy["root"] / "base_model", model_config=config["model"],
                     train_config={**config["train"], **overrides}, variant=variant, seed=0, out_dir=out, encoder_outputs=encoder_outputs)


def stage_caches(toy, point, out):
    """The encoder_outputs stage's train and val caches at `point`."""
    config = toy["config"]
    dirs = {split: out / point / split for split in ("train", "val")}
    for split, path in dirs.items():
        write_cache(toy["features"][split], toy["root"] / "base_model", config["model"], config["train"], point, path)
    return dirs


def assert_same_run(cached_dir, uncached_dir):
    cached, uncached = (pd.read_csv(d / "curve.csv") for d in (cached_dir, uncached_dir))
    assert cached.val_loss.tolist() == pytest.approx(uncached.val_loss.tolist(), **TOLERANCE)
    assert cached.train_loss.tolist() == pytest.approx(uncached.train_loss.tolist(), **TOLERANCE)
    logits = [pd.read_csv(d / "predictions.csv").logit.to_numpy() for d in (cached_dir, uncached_dir)]
    assert logits[0] == pytest.approx(logits[1], **TOLERANCE)  # the test split, scored by the whole classifier
    a, b = (read_summary(d).quality for d in (cached_dir, uncached_dir))
    assert a.test_auc == pytest.approx(b.test_auc, **TOLERANCE) and a.best_step == b.best_step


@pytest.mark.parametrize("variant, point", [(FROZEN, "pooled"), (PARTIAL, "top1-input")])
def test_a_cached_run_equals_the_uncached_run(toy, tmp_path, variant, point):
    """Trained on the stage's cache, on one the run computes itself, and on the whole model: the same run."""
    uncached = train(toy, variant, tmp_path / "off", encoder_cache="off")
    staged = train(toy, variant, tmp_path / "staged", stage_caches(toy, point, tmp_path / "caches"))
    itself = train(toy, variant, tmp_path / "itself")
    assert_same_run(tmp_path / "staged", tmp_path / "off")
    assert_same_run(tmp_path / "itself", tmp_path / "off")
    assert uncached["encoder_cache"]["used"] is False and uncached["encoder_cache"]["reason"] == "train.encoder_cache: off"
    for record, source in ((staged, "the encoder_outputs stage"), (itself, "computed by this run")):
        assert record["encoder_cache"]["used"] is True and record["encoder_cache"]["source"] == source
        assert record["encoder_cache"]["precision"] == "fp32" and record["encoder_cache"]["reason"] is None
    assert staged["encoder_cache"]["inputs"] == ("pooled encoder outputs" if point == "pooled" else "hidden states entering the top 1 layer")


def test_a_family_that_trains_the_whole_encoder_is_not_cached(toy, tmp_path):
    record = train(toy, Variant(name="full", family="full", lr=1e-4), tmp_path, epochs=1)["encoder_cache"]
    assert record["used"] is False and record["reason"] == "full trains the whole encoder: no frozen prefix"


def test_the_cache_records_what_it_was_computed_from(toy, tmp_path):
    dirs = stage_caches(toy, "top1-input", tmp_path)
    meta = json.loads((dirs["train"] / META_FILE).read_text())
    d_model, positions = toy["config"]["model"]["random_init"]["d_model"], 50  # a 1 s clip: 100 frames, halved by the convolution
    assert meta["shape"] == [40, 2, positions, d_model] and meta["precision"] == "fp32" and meta["context"] == "clip"
    assert meta["features"] == json.loads((toy["features"]["train"] / "meta.json").read_text())["files"]
    assert np.load(dirs["train"] / OUTPUTS_FILE).dtype == np.float32


def test_a_corrupt_cache_is_refused_naming_it(toy, tmp_path):
    dirs = stage_caches(toy, "pooled", tmp_path)
    outputs = dirs["val"] / OUTPUTS_FILE
    data = bytearray(outputs.read_bytes())
    data[-1] ^= 0xFF
    outputs.write_bytes(bytes(data))
    with pytest.raises(StageError, match=rf"^{re.escape(str(outputs))} does not match the SHA-256 meta.json records .*--forcerun encoder_outputs"):
        train(toy, FROZEN, tmp_path / "run", dirs)


def test_a_cache_of_other_features_is_refused_naming_its_key(toy, tmp_path):
    dirs = stage_caches(toy, "pooled", tmp_path)
    swapped = {"train": dirs["val"], "val": dirs["val"]}  # the val cache given as the train split's
    with pytest.raises(StageError, match=rf"^{re.escape(str(dirs['val'] / META_FILE))}: features is other checksums, .*stale cache"):
        train(toy, FROZEN, tmp_path / "run", swapped)


def test_a_random_frozen_encoder_or_a_huge_cache_is_refused_with_the_reason(toy, monkeypatch):
    config = toy["config"]
    model = build_classifier(toy["root"] / "base_model", 2, 100, config["model"])
    assert refusal(model.encoder, 1, 40, 2) is None
    model.encoder.config.attention_dropout = 0.1
    assert refusal(model.encoder, 1, 40, 2).startswith("the frozen encoder is random in training mode (attention_dropout 0.1 in its config)")
    model.encoder.config.attention_dropout = 0.0
    monkeypatch.setattr("gwlora.encoder_cache.MAX_CACHE_BYTES", 1000)
    assert "above the 0 GiB bound" in refusal(model.encoder, 1, 40, 2)


def test_a_refused_cache_trains_the_whole_model_and_says_why(toy, tmp_path, monkeypatch):
    monkeypatch.setattr("gwlora.encoder_cache.MAX_CACHE_BYTES", 1000)
    dirs = stage_caches(toy, "top1-input", tmp_path)
    assert not (dirs["train"] / OUTPUTS_FILE).exists()
    record = train(toy, PARTIAL, tmp_path / "run", dirs, epochs=1)["encoder_cache"]
    assert record["used"] is False and "GiB, above the 0 GiB bound" in record["reason"]


def test_the_estimates_follow_the_cheaper_cached_runs():
    from gwlora import resources
    from gwlora.config import expand_variants

    config = tiny_config(data__splits={"train": 20000, "val": 2000, "test": 2000}, train__epochs=20)
    variants = expand_variants(config["train"], config["model"])
    full, frozen, partial = (resources.train_runtime(config, variant=variants[name]) for name in ("full", "frozen", "partial-top1"))
    assert frozen < partial < full
    jobs = [row["job"] for row in resources.estimates(config)]
    assert {"train frozen (each lr and seed, on cached pooled)", "encoder_outputs clip pooled train", "encoder_outputs clip top1-input val"} <= set(jobs)
    off = {**config, "train": {**config["train"], "encoder_cache": "off"}}
    assert resources.train_runtime(off, variant=variants["frozen"]) == full and not any(j.startswith("encoder_outputs") for j in map(
        lambda row: row["job"], resources.estimates(off)))


def test_the_workflow_plans_one_cache_job_per_context_point_and_split(tmp_path):
    """Every lr and seed of frozen (and partial) reads the same two caches; the whole-encoder variants none."""
    import yaml

    from test_workflow import snakemake, workflow_copy

    root = workflow_copy(tmp_path)
    config = yaml.safe_load((root / "config" / "demo.yaml").read_text())
    config["train"]["seeds"] = [0, 1]
    config["train"]["variants"] = {"full": {"lr": 1e-4}, "frozen": {"lr": [1e-3, 1e-2]}, "partial": {"layers": 1, "lr": 1e-4}}
    (root / "config" / "cache.yaml").write_text(yaml.safe_dump(config))
    out = snakemake(root, "-n", "--cores", "2", "--printshellcmds", "--configfile", "config/cache.yaml").stdout
    assert re.search(r"^train\s+8$", out, re.M), out
    commands = [line for line in out.splitlines() if "gwlora.train " in line]
    assert re.search(r"^encoder_outputs\s+4$", out, re.M), out  # (clip) x (pooled, top1-input) x (train, val)
    frozen = [re.search(r"--train-encoder-outputs (\S+) --val-encoder-outputs (\S+)", c).groups() for c in commands if "runs/frozen" in c]
    assert len(frozen) == 4 and set(frozen) == {("results/demo/encoder_outputs/clip/pooled/train", "results/demo/encoder_outputs/clip/pooled/val")}
    assert sum("encoder_outputs/clip/top1-input/train" in c for c in commands) == 2
    assert not any("encoder-outputs" in c for c in commands if "runs/full/" in c)
