import json
import shutil

import numpy as np
import pandas as pd
import pytest

from gwlora.cli import StageError
from gwlora.config import Variant, expand_variants
from gwlora.train import CURVE_COLUMNS, main, train_run


def run(built, variant, out, features=None, **train_overrides):
    root, config = built["root"], built["config"]
    features = features or {s: root / "features" / s for s in ("train", "val", "test")}
    return train_run(
        features=features,
        model_dir=root / "base_model",
        model_config=config["model"],
        train_config={**config["train"], **train_overrides},
        variant=variant,
        seed=0,
        out_dir=out,
    )


def test_run_writes_curve_and_summary(built, tmp_path):
    variant = expand_variants(built["config"]["train"])["lora-r2"]
    summary = run(built, variant, tmp_path)
    curve = pd.read_csv(tmp_path / "curve.csv")
    assert tuple(curve.columns) == CURVE_COLUMNS
    assert list(curve.step) == [6, 12]  # 48 windows / batch 8, evaluated once per epoch for 2 epochs
    assert curve.train_time_s.is_monotonic_increasing and (curve.train_time_s > 0).all()
    assert curve.val_auc.between(0, 1).all()
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["best_val_loss"] == pytest.approx(curve.val_loss.min())
    assert saved["best_val_auc"] == pytest.approx(curve.val_auc.max())
    assert saved["train_time_s"] == pytest.approx(curve.train_time_s.iloc[-1])
    assert saved["trainable_parameters"] == summary["trainable_parameters"] < saved["total_parameters"]
    assert 0 <= saved["test_auc"] <= 1 and saved["peak_memory_bytes"] > 0
    assert saved["variant"] == "lora-r2" and saved["device"] == "cpu" and saved["precision"] == "fp32"


def test_eval_every_steps(built, tmp_path):
    run(built, Variant(name="frozen", family="frozen", lr=1e-3), tmp_path, eval_every_steps=4)
    assert list(pd.read_csv(tmp_path / "curve.csv").step) == [4, 8, 12]  # and always the last step


def test_early_stopping_stops_and_keeps_the_best(built, tmp_path):
    variant = Variant(name="full", family="full", lr=5e-2)  # too high: val loss climbs
    summary = run(built, variant, tmp_path, epochs=8, eval_every_steps=2, early_stopping_patience=2)
    curve = pd.read_csv(tmp_path / "curve.csv")
    assert summary["early_stopped"] and len(curve) < 24
    assert summary["best_step"] == curve.step[curve.val_loss.idxmin()]


def test_non_finite_loss_names_variant_seed_and_step(built, tmp_path):
    features = tmp_path / "features"
    for split in ("train", "val"):
        shutil.copytree(built["root"] / "features" / split, features / split)
    x = np.load(features / "train" / "features.npy")
    x[:] = np.nan
    np.save(features / "train" / "features.npy", x)
    with pytest.raises(StageError, match=r"full seed 0: non-finite training loss at step 1"):
        run(built, Variant(name="full", family="full", lr=1e-3), tmp_path / "run", features={s: features / s for s in ("train", "val")})
    assert not (tmp_path / "run" / "summary.json").exists()


def test_cli_failure_is_one_line_with_traceback_in_log(built, tmp_path, capsys):
    log = tmp_path / "train.log"
    rc = main([
        "--train-features", str(tmp_path / "missing"), "--val-features", str(tmp_path / "missing"),
        "--model", str(built["root"] / "base_model"),
        "--model-config", json.dumps(built["config"]["model"]),
        "--train-config", json.dumps(built["config"]["train"]),
        "--variant", json.dumps(Variant(name="full", family="full", lr=1e-3).to_dict()),
        "--seed", "0", "--out", str(tmp_path / "run"), "--log", str(log),
    ])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert err[-1].startswith("gwlora-train: error:") and "missing" in err[-1] and str(log) in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert "Traceback" in log.read_text()
