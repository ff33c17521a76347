"""The matched filter as a workflow family: refused where it cannot search, a run folder shaped like a training run's,
its rows in the tables, the oracle in the efficiency figure, and the deck's sentences following the intervals."""

import copy
import math

import numpy as np
import pandas as pd
import pytest

from conftest import SCHEMA, assert_figure_drawn, tiny_config
from gwlora import families
from gwlora.aggregate import aggregate, load_runs
from gwlora.config import ConfigError, expand_variants, validate
from gwlora.dataset import build_split, save_split
from gwlora.families.matched_filter import MATCHED_FILTER, NAME, matched_filter_variant
from gwlora.findings import optimal_detector
from gwlora.matched_filter_stage import RECORD_FILE, bank_key, bank_settings, build_bank, score_run
from gwlora.plot import Canvas, plot_efficiency, plot_pareto
from gwlora.records import PREDICTION_COLUMNS, read_curve, read_predictions, read_summary, write_predictions
from run_fixtures import fake_run

TINY_BANK = {"minimal_match": 0.5, "max_rejections": 3}  # a handful of templates: seconds, not minutes


def test_the_family_is_configured_under_train_variants_and_plans_no_training_run():
    config = tiny_config(train__variants={"frozen": {"lr": 1e-3}, NAME: {}})
    assert config["train"]["variants"][NAME] == {"minimal_match": 0.97, "max_rejections": 200}  # the schema's defaults
    assert list(expand_variants(config["train"])) == ["frozen"]  # nothing to train
    variant = matched_filter_variant(config["train"])
    assert variant.family == NAME and math.isnan(variant.lr) and variant.params["minimal_match"] == 0.97
    assert families.family(NAME).trained is False and families.family("full").trained is True


@pytest.mark.parametrize("source", ["hub", "audiofolder", "gwosc"])
def test_the_family_is_refused_without_simulated_noise(source):
    config = {"data": {"source": source}, "evaluation": {"test_sets": {}}}
    with pytest.raises(ConfigError, match=f"train.variants.{NAME}: the matched filter needs a strain source with injections and a known PSD"):
        MATCHED_FILTER.check(NAME, {}, config, None)


def test_the_family_is_refused_at_validation_for_a_gwosc_test_set():
    config = tiny_config()
    raw = {k: copy.deepcopy(v) for k, v in config.items()}
    raw["train"]["variants"] = {"frozen": {"lr": 1e-3}, NAME: {}}
    raw["evaluation"]["test_sets"] = {"real": {"source": "gwosc"}}
    with pytest.raises(ConfigError, match=f"evaluation.test_sets.real.source: the matched filter"):
        validate(raw, copy.deepcopy(SCHEMA))


def test_what_trains_names_the_bank():
    assert MATCHED_FILTER.trains({"family": NAME, "bank_size": 12.0}) == "nothing (template bank of 12)"
    assert MATCHED_FILTER.trains({"family": NAME}) == "nothing (a template bank)"


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """Tiny simulated splits, a tiny bank, and the matched filter's run folder (a shifted test set of heavier masses)."""
    root = tmp_path_factory.mktemp("mf")
    config = tiny_config(data__splits={"train": 8, "val": 12, "test": 12}, train__variants={"frozen": {"lr": 1e-3}, NAME: TINY_BANK},
                         evaluation={"test_sets": {"heavy": {"injection": {"masses": {"min": 50.0, "max": 60.0}}}}})
    data = config["data"]
    heavy = config["evaluation"]["test_sets"]["heavy"]
    for split, section in (("val", data), ("test", data), ("shift-heavy", heavy)):
        ds, record = build_split(section, 0, "test" if split.startswith("shift") else split)  # one seed: the fake runs share its labels
        save_split(ds, record, root / "data" / split)
    settings = bank_settings(data, data["injection"]["masses"])
    assert bank_settings(heavy, data["injection"]["masses"]) == settings  # masses shift, the bank does not: one bank
    bank = root / f"bank-{bank_key(settings, TINY_BANK, 0)}.json"
    build_bank(settings, {**TINY_BANK}, 0, bank)
    variant = matched_filter_variant(config["train"])
    run = root / "runs" / NAME / "seed0"
    record = score_run(variant, 0, root / "data" / "val", root / "data" / "test", bank, {"heavy": (root / "data" / "shift-heavy", bank)},
                       config["train"]["tpr_at_fpr"], run)
    return {"root": root, "config": config, "run": run, "record": record}


def test_the_run_folder_is_shaped_like_a_training_runs(searched):
    run = searched["run"]
    summary = read_summary(run)  # every field of a training run's summary.json, checked
    assert summary.identity.family == NAME and summary.identity.trainable_parameters == 0
    assert math.isnan(summary.costs.train_time_s) and summary.costs.latency_ms == {}
    assert read_curve(run / "curve.csv").empty  # nothing trained, no evaluation
    predictions = read_predictions(run / "predictions.csv")
    assert tuple(predictions.columns) == PREDICTION_COLUMNS and len(predictions) == 12
    assert (predictions.logit >= 0).all()  # a network SNR
    assert read_predictions(run / "shift" / "heavy" / "predictions.csv").shape == (12, 4)
    assert (run / "shift" / "heavy" / "metrics.json").is_file()
    record = searched["record"]
    assert record["bank_size"] >= 1 and record["minimal_match"] == 0.5 and record["windows_per_s"] > 0
    heavy = record["sets"]["heavy"]
    assert heavy["outside_bank"] == heavy["n_signal"] > 0  # 50-60 Msun injections against a 10-50 bank: reported as such
    assert record["sets"]["test"]["outside_bank"] == 0 and record["sets"]["test"]["oracle_trials"] > 1


def test_the_network_snr_separates_the_signals(searched):
    predictions = read_predictions(searched["run"] / "predictions.csv")
    signal, noise = predictions[predictions.label == 1], predictions[predictions.label == 0]
    loud = signal[signal.snr > 10]
    assert len(loud) and loud.logit.min() > noise.logit.median()  # loud injections score above typical noise


@pytest.fixture(scope="module")
def tables(searched, tmp_path_factory):
    """The aggregate stage over two fake trained runs and the matched filter's, on the same windows."""
    from shape_decks import study_inputs

    root = tmp_path_factory.mktemp("mf-tables")
    config = searched["config"]
    labels = read_predictions(searched["run"] / "predictions.csv").label.to_numpy()
    rng = np.random.default_rng(0)
    runs = []
    for variant in expand_variants(tiny_config(train__variants={"full": {"lr": 1e-4}, "frozen": {"lr": 1e-3}})["train"]).values():
        runs.append(root / "runs" / variant.run / "seed0")
        fake_run(runs[-1], variant, 0, labels, rng, False, ["heavy"])
        for where in ("predictions.csv", "shift/heavy/predictions.csv"):  # the same windows: the injections' own SNRs
            fake = read_predictions(runs[-1] / where)
            write_predictions(runs[-1] / where, fake.label, read_predictions(searched["run"] / where).snr, fake.logit)
    model, data = study_inputs(root, config)
    aggregate([*runs, searched["run"]], root / "tables", model, data, config)
    return {name: pd.read_csv(root / "tables" / f"{name}.csv") for name in ("summary", "differences", "shift", "efficiency", "runs")}


def test_aggregate_treats_the_matched_filter_like_any_run(tables):
    summary = tables["summary"].set_index("variant")
    assert NAME in summary.index and summary.loc[NAME, "bank_size"] >= 1 and summary.loc[NAME, "minimal_match"] == 0.5
    assert math.isnan(summary.loc[NAME, "train_time_s"]) and bool(tables["runs"].set_index("variant").loc[NAME, "selected"])
    diffs = tables["differences"]
    assert {("full", NAME), ("frozen", NAME)} <= set(zip(diffs.variant, diffs.baseline))  # each variant against the optimal detector
    pooled = diffs[(diffs.variant == "full") & (diffs.baseline == NAME) & (diffs.seed.astype(str) == "pooled")]
    assert summary.loc["full", "delta_vs_matched-filter"] == pytest.approx(pooled.delta.iloc[0])
    assert summary.loc["full", "ci_low_vs_matched-filter"] <= pooled.delta.iloc[0] <= summary.loc["full", "ci_high_vs_matched-filter"]
    shift = tables["shift"]
    assert set(shift[shift.variant == NAME].test_set) == {"test", "heavy"}
    assert shift.set_index(["test_set", "variant"]).loc[("heavy", NAME), "outside_bank"] == 1.0
    assert "verdict_vs_matched-filter" in shift and NAME in set(tables["efficiency"].variant)


def test_the_efficiency_table_and_figure_carry_the_oracle(tables, tmp_path):
    eff = tables["efficiency"]
    assert eff.oracle_efficiency.between(0, 1).all()
    by_bin = eff[(eff.variant == NAME) & (eff.test_set == "test")].groupby("snr_bin").oracle_efficiency.first()
    assert by_bin.is_monotonic_increasing  # louder signals, likelier found
    fig = plot_efficiency(eff, Canvas(tmp_path, list(dict.fromkeys(eff.variant))))
    labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    assert any("oracle" in label for label in labels)
    fig.savefig(tmp_path / "efficiency.png")
    assert_figure_drawn(tmp_path / "efficiency.png")


def test_the_pareto_figure_shows_the_search_beside_the_front(tables, tmp_path):
    fig = plot_pareto(tables["summary"], Canvas(tmp_path, list(tables["summary"].variant)))
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any(t.startswith("matched filter") and "windows/s" in t for t in texts)
    assert not any(t == NAME for t in texts)  # not a point on the trained variants' front


def _optimal(delta, low, high, eff=(0.5, 0.4, 0.6)):
    summary = pd.DataFrame({"variant": ["full", NAME], "family": ["full", NAME], "test_auc": [0.8, 0.9], "bank_size": [np.nan, 30.0],
                            "minimal_match": [np.nan, 0.9], "windows_per_s": [np.nan, 25.0], "did_not_learn": [0, 0]})
    diffs = pd.DataFrame({"variant": ["full"], "baseline": [NAME], "seed": ["pooled"], "delta": [delta], "ci_low": [low], "ci_high": [high],
                          "verdict": ["higher" if low > 0 else "lower" if high < 0 else "indistinguishable"], "n_seeds": [1],
                          "seed_sd": [np.nan], "unconverged": [""]})
    rows = [["test", v, 1, 8.6, 12.3, 10.0, 20, 1, 0.01, e, lo, hi, 0.9] for v, (e, lo, hi) in (("full", eff), (NAME, (0.8, 0.6, 0.9)))]
    # a louder bin, its median outside 8-12: not in the slide's efficiency
    rows += [["test", v, 2, 12.3, 20.0, 14.0, 20, 1, 0.01, 1.0, 0.9, 1.0, 1.0] for v in ("full", NAME)]
    efficiency = pd.DataFrame(rows, columns=["test_set", "variant", "snr_bin", "snr_low", "snr_high", "snr_median", "n_signal", "seeds",
                                             "threshold_fpr", "efficiency", "ci_low", "ci_high", "oracle_efficiency"])
    return optimal_detector({"summary": summary, "differences": diffs, "efficiency": efficiency})


def test_the_findings_sentence_follows_its_interval():
    below = _optimal(-0.1, -0.15, -0.05)
    assert below["bank_size"] == "30" and below["rows"][0]["variant"] == "full"
    assert below["rows"][0]["auc"].startswith("lower") and "-0.1000" in below["rows"][0]["auc"]
    assert _optimal(-0.01, -0.05, 0.03)["rows"][0]["auc"].startswith("indistinguishable")
    assert "below the matched filter" in _optimal(-0.1, -0.15, -0.05, eff=(0.3, 0.2, 0.4))["rows"][0]["efficiency"]
    assert "not told apart" in _optimal(-0.1, -0.15, -0.05, eff=(0.7, 0.55, 0.85))["rows"][0]["efficiency"]
    assert _optimal(-0.1, -0.15, -0.05)["oracle"].startswith("0.90")
    # the range named is the bins' own, not the nominal 8-12 they were chosen by
    assert _optimal(-0.1, -0.15, -0.05)["snr_range"] == "8.6–12.3"


def test_the_bank_command_writes_a_checked_bank(tmp_path):
    import json

    from gwlora.cli import StageError
    from gwlora.matched_filter_stage import main, read_bank

    data = tiny_config()["data"]
    settings = bank_settings(data, data["injection"]["masses"])
    out, log = tmp_path / "bank.json", tmp_path / "bank.log"
    argv = ["--log", str(log), "bank", "--settings", json.dumps(settings), "--spec", json.dumps(TINY_BANK), "--seed", "0", "--out", str(out)]
    assert main(argv) == 0 and log.is_file()  # the rule's command line, --log before the subcommand
    space, bank, record = read_bank(out)
    assert len(bank.masses) == record["bank"]["size"] >= 1 and space.fs == data["sample_rate"]
    record["bank"]["masses"][0][0] += 1.0
    out.write_text(json.dumps(record))
    with pytest.raises(StageError, match="checksum does not match"):
        read_bank(out)
