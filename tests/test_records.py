"""The run record: what train writes is what evaluate and aggregate read back, and a record another process got wrong is named."""

import json
import re
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from gwlora.cli import StageError
from gwlora.variants import Variant
from gwlora.records import (CURVE_COLUMNS, CURVE_FILE, PREDICTION_COLUMNS, SUMMARY_FILE, CurveRow, Summary, read_curve, read_predictions,
                            read_summary, write_curve, write_predictions)
from run_fixtures import fake_summary

LORA = Variant(name="lora-r4", family="lora", config_key="lora", lr=5e-3, params={
    "rank": 4, "alpha": 4.0, "target_modules": ["q_proj", "v_proj"], "dropout": 0.0, "rslora": False, "dora": False})


def written(tmp_path, change=None) -> dict:
    """A summary.json written as train writes it, then changed by `change` as another process might have left it."""
    record = fake_summary(LORA, 0).to_json()
    if change:
        change(record)
    (tmp_path / SUMMARY_FILE).write_text(json.dumps(record))
    return record


def test_a_summary_reads_back_as_it_was_written(tmp_path):
    summary = fake_summary(LORA, 0)
    summary.write(tmp_path)
    assert read_summary(tmp_path) == summary
    saved = json.loads((tmp_path / SUMMARY_FILE).read_text())
    # the keys the aggregate, plot and deck look up, side by side in one object
    assert saved["variant"] == "lora-r4" and saved["test_auc"] == 0.8 and saved["latency_ms"]["merged"] == 3.05
    assert saved["variant_config"] == LORA.to_dict() and saved["input"]["n_frames"] == 100


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("test_auc"), r"lacks test_auc; written by another gwlora version"),
        (lambda r: r.update(test_aucs=0.8), r"has unknown keys test_aucs"),
        (lambda r: r.update(steps="8"), r"steps is '8', not int"),
        (lambda r: r.update(steps=8.5), r"steps is 8.5, not int"),
        (lambda r: r.update(best_val_loss=None), r"best_val_loss is None, not float"),
        (lambda r: r.update(did_not_learn=1), r"did_not_learn is 1, not bool"),
        (lambda r: r.update(latency_ms=[3.0]), r"latency_ms is \[3.0\], not dict"),
    ],
    ids=["missing", "unknown", "text-for-int", "float-for-int", "null-for-float", "int-for-bool", "list-for-dict"],
)
def test_a_summary_with_wrong_keys_or_types_is_refused_naming_the_file_and_key(tmp_path, change, message):
    written(tmp_path, change)
    with pytest.raises(StageError, match=rf"^{re.escape(str(tmp_path / SUMMARY_FILE))}: {message}"):
        read_summary(tmp_path)


def test_optional_fields_take_null_and_floats_take_integers(tmp_path):
    written(tmp_path, lambda r: r.update(test_auc=None, test_one_class=None, git_commit=None, train_time_s=4))
    summary = read_summary(tmp_path)
    assert summary.quality.test_auc is None and summary.provenance.git_commit is None and summary.costs.train_time_s == 4


def test_a_folder_without_a_summary_or_with_broken_json_is_named(tmp_path):
    with pytest.raises(StageError, match=rf"{re.escape(str(tmp_path))}: no summary.json, so not a finished training run"):
        read_summary(tmp_path)
    (tmp_path / SUMMARY_FILE).write_text('{"variant": ')
    with pytest.raises(StageError, match=rf"{re.escape(str(tmp_path / SUMMARY_FILE))} is corrupt, not valid JSON .*: train the run again"):
        read_summary(tmp_path)


def test_a_curve_reads_back_with_its_columns_and_a_foreign_one_is_named(tmp_path):
    rows = [asdict(CurveRow(step=4, epoch=1.0, samples_seen=64, train_time_s=2.0, train_loss=0.69, val_loss=0.68, val_auc=0.6,
                            val_accuracy=0.55, val_brier=0.24))]
    write_curve(rows, tmp_path / CURVE_FILE)
    curve = read_curve(tmp_path / CURVE_FILE)
    assert tuple(curve.columns) == CURVE_COLUMNS and curve.to_dict("records") == rows
    pd.DataFrame(rows).drop(columns="val_brier").to_csv(tmp_path / CURVE_FILE, index=False)
    with pytest.raises(StageError, match=rf"{re.escape(str(tmp_path / CURVE_FILE))}: columns .*val_accuracy, expected .*val_accuracy, val_brier$"):
        read_curve(tmp_path / CURVE_FILE)


def test_predictions_read_back_in_window_order_and_text_in_a_column_is_named(tmp_path):
    path = tmp_path / "predictions.csv"
    write_predictions(path, np.array([1.0, 0.0, 1.0]), np.array([12.5, 0.0, 8.0]), np.array([2.5, -1.0, 0.25], dtype=np.float32))
    frame = read_predictions(path)
    assert tuple(frame.columns) == PREDICTION_COLUMNS
    assert frame.window.tolist() == [0, 1, 2] and frame.label.tolist() == [1, 0, 1] and frame.logit.tolist() == [2.5, -1.0, 0.25]
    path.write_text("window,label,snr,logit\n0,1,12.5,nan\n1,0,0,oops\n")
    with pytest.raises(StageError, match=rf"{re.escape(str(path))}: column logit holds 'oops', not a number"):
        read_predictions(path)


def test_every_field_of_a_summary_is_one_key():
    """The parts' fields share one JSON object, so no two parts may name a field alike."""
    record = fake_summary(LORA, 0).to_json()
    assert len(record) == sum(len(part) for part in asdict(fake_summary(LORA, 0)).values())
    assert Summary.from_json(record, "here") == fake_summary(LORA, 0)
