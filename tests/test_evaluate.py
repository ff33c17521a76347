"""Shifted test sets: their config (overrides of the training data, own seeds) and the evaluate stage (score a run's checkpoint)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from conftest import SCHEMA, tiny_config
from gwlora.cli import StageError
from gwlora.config import ConfigError, expand_variants, shifted_splits, split_source, seed_of_test_set, validate
from gwlora.evaluate import main, score_run
from gwlora.features import write_features
from gwlora.train import train_run


def with_test_sets(**test_sets) -> dict:
    return tiny_config(evaluation={"test_sets": test_sets})


def test_a_test_set_is_the_training_data_with_its_overrides_and_its_own_seed():
    config = with_test_sets(quiet={"snr": {"min": 3.0, "max": 6.0}}, heavy={"injection": {"masses": {"min": 50.0, "max": 100.0}}, "splits": {"test": 24}})
    assert shifted_splits(config) == ["shift-quiet", "shift-heavy"]
    quiet, quiet_seed, split = split_source(config, "shift-quiet")
    heavy, heavy_seed, _ = split_source(config, "shift-heavy")
    assert split == "test" and quiet["snr"] == {"min": 3.0, "max": 6.0} and quiet["injection"] == config["data"]["injection"]
    assert heavy["injection"]["masses"] == {"min": 50.0, "max": 100.0} and heavy["injection"]["approximant"] == config["data"]["injection"]["approximant"]
    assert heavy["splits"]["test"] == 24 and quiet["splits"] == config["data"]["splits"]
    # every test set its own data seed, never the training data's, the same on every run
    assert len({config["seed"], quiet_seed, heavy_seed}) == 3 and quiet_seed == seed_of_test_set(config["seed"], "quiet")
    assert split_source(config, "test") == (config["data"], config["seed"], "test")
    with pytest.raises(ConfigError, match="unknown data set 'shift-loud'"):
        split_source(config, "shift-loud")


def test_validating_a_validated_config_changes_nothing():
    config = with_test_sets(quiet={"snr": {"min": 3.0, "max": 6.0}})
    again = validate(copy.deepcopy(config), copy.deepcopy(SCHEMA))
    assert again == config


@pytest.mark.parametrize(
    "test_set, message",
    [
        ({"snr": {"min": 9.0, "max": 8.0}}, r"evaluation\.test_sets\.bad\.snr: min \(9\.0\) > max \(8\.0\)"),
        ({"snrr": {"min": 4.0}}, r"unknown key evaluation\.test_sets\.bad\.snrr"),
        ({"detectors": ["H1"]}, r"evaluation\.test_sets\.bad: its windows \(1 channel\(s\) of 1\.0 s\) must have the shape of the training windows \(2"),
        ({"window_seconds": 2.0, "segment_seconds": 8.0}, r"evaluation\.test_sets\.bad: its windows \(2 channel\(s\) of 2\.0 s\)"),
        ({"injection": {"approximant": "NoSuchApproximant"}}, r"evaluation\.test_sets\.bad\.injection\.approximant"),
    ],
)
def test_a_bad_test_set_is_named_before_anything_runs(test_set, message):
    with pytest.raises(ConfigError, match=message):
        with_test_sets(bad=test_set)


def test_an_audio_test_set_keeps_the_experiments_seed_and_an_unread_key_is_named():
    audio = {"source": "audiofolder", "audiofolder": {"path": "clips", "positive_class": "yes"}, "splits": {"train": 8, "val": 4, "test": 4}}
    config = tiny_config(data=audio, evaluation={"test_sets": {"other": {"audiofolder": {"path": "other-clips"}}}})
    data, seed, split = split_source(config, "shift-other")
    # the audio sources split a folder by the seed: the experiment's keeps a same-folder test set inside its test split
    assert seed == config["seed"] and split == "test" and data["audiofolder"]["path"] == "other-clips"
    with pytest.raises(ConfigError, match=r"evaluation\.test_sets\.quiet\.snr: data\.source audiofolder does not read it"):
        tiny_config(data=audio, evaluation={"test_sets": {"quiet": {"snr": {"min": 3.0, "max": 6.0}}}})


def test_a_test_set_name_must_be_a_plain_word():
    with pytest.raises(ConfigError, match="evaluation.test_sets"):
        with_test_sets(**{"Quiet set!": {"snr": {"min": 3.0, "max": 6.0}}})


def test_gwosc_test_noise_may_not_overlap_the_training_noise():
    gwosc = {"segments": {"train": [[1000, 2000]], "val": [[3000, 3500]], "test": [[4000, 4500]]}}
    config = tiny_config()
    data = {**config["data"], "source": "gwosc", "gwosc": gwosc}
    with pytest.raises(ConfigError, match=r"evaluation\.test_sets\.real\.gwosc\.segments\.test\.0 \[1500, 1800\] overlaps evaluation\.test_sets\.real\.gwosc\.segments\.train\.0"):
        tiny_config(data=data, evaluation={"test_sets": {"real": {"gwosc": {"segments": {"test": [[1500, 1800]]}}}}})
    # even when the test set moves its own train segments away, its test noise is checked against the runs' training noise
    moved = {"gwosc": {"segments": {"train": [[9000, 9500]], "test": [[1500, 1800]]}}}
    with pytest.raises(ConfigError, match=r"evaluation\.test_sets\.real\.gwosc\.segments\.test \[1500, 1800\] overlaps data\.gwosc\.segments\.train"):
        tiny_config(data=data, evaluation={"test_sets": {"real": moved}})


@pytest.fixture(scope="module")
def trained(built, tmp_path_factory):
    """A frozen run on the tiny data set, trained once."""
    root, config = built["root"], built["config"]
    out = tmp_path_factory.mktemp("evaluate") / "frozen" / "seed0"
    train_run(features={s: root / "features" / s for s in ("train", "val", "test")}, model_dir=root / "base_model",
              model_config=config["model"], train_config=config["train"], variant=expand_variants(config["train"])["frozen"], seed=0, out_dir=out)
    return out


def test_scoring_the_runs_own_test_split_gives_its_test_numbers(built, trained, tmp_path):
    record = score_run(trained, built["root"] / "features" / "test", tmp_path / "scored")
    summary = json.loads((trained / "summary.json").read_text())
    assert (record["auc"], record["brier"], record["accuracy"]) == (summary["test_auc"], summary["test_brier"], summary["test_accuracy"])
    assert (tmp_path / "scored" / "predictions.csv").read_bytes() == (trained / "predictions.csv").read_bytes()
    assert json.loads((tmp_path / "scored" / "metrics.json").read_text())["checkpoint"].startswith(str(trained / "best"))


def test_the_cli_scores_data_of_a_users_own(trained, tmp_path, capsys):
    rng = np.random.default_rng(1)
    meta = json.loads((trained / "summary.json").read_text())["input"]
    labels = np.arange(20) % 2
    features = rng.normal(0, 1, size=(20, len(meta["channels"]), 80, meta["n_frames"])).astype(np.float32)
    write_features(tmp_path / "mine", features, labels, np.zeros(20), split="test", channels=meta["channels"])
    assert main(["--run", str(trained), "--features", str(tmp_path / "mine"), "--out", str(tmp_path / "out")]) == 0
    scored = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert scored["n_windows"] == 20 and 0 <= scored["auc"] <= 1 and 0 <= scored["brier"] <= 1


def test_features_of_another_shape_are_refused_naming_both(trained, tmp_path):
    write_features(tmp_path / "one-channel", np.zeros((4, 1, 80, 100), np.float32), np.array([0, 1, 0, 1]), np.zeros(4), split="test", channels=["H1"])
    with pytest.raises(StageError, match=r"one-channel: windows of 1 channel\(s\) x 100 frames, but .* was trained on 2 channel\(s\) \(H1, L1\)"):
        score_run(trained, tmp_path / "one-channel", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_not_a_finished_run_is_named(tmp_path, built, capsys):
    assert main(["--run", str(tmp_path), "--features", str(built["root"] / "features" / "test"), "--out", str(tmp_path / "out")]) != 0
    assert "no summary.json, so not a finished training run" in capsys.readouterr().err


def test_a_corrupt_summary_is_named_with_how_to_rebuild_it(tmp_path, capsys):
    run = tmp_path / "runs" / "frozen" / "seed0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text('{"variant": "frozen"\n"seed": 0}')
    assert main(["--run", str(run), "--features", str(tmp_path / "features"), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert f"{run / 'summary.json'} is corrupt, not valid JSON (Expecting ',' delimiter: line 2 column 1" in err
    assert f"train the run again (delete {run}" in err and not (tmp_path / "out").exists()


def test_the_workflow_form_writes_beside_each_run_and_out_takes_one_run(built, trained, tmp_path, capsys):
    features = str(built["root"] / "features" / "test")
    assert main(["--run", str(trained), "--features", features, "--name", "again"]) == 0
    assert json.loads((trained / "shift" / "again" / "metrics.json").read_text())["auc"] == json.loads((trained / "summary.json").read_text())["test_auc"]
    assert main(["--run", str(trained), str(trained), "--features", features, "--out", str(tmp_path / "one")]) != 0
    assert "--out holds one run's scores; give --name" in capsys.readouterr().err and not (tmp_path / "one").exists()
