import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from peft import PeftModel

from conftest import SCHEMA, write_toy_features
from gwlora.cli import StageError
from gwlora.config import Variant, expand_variants
from gwlora.families import apply_variant
from gwlora.model import build_classifier
from gwlora import scoring
from gwlora import train as train_module
from gwlora.records import CURVE_COLUMNS
from gwlora.run_state import RUN_STATE
from gwlora.scoring import BEST_DIR, CHECKSUMS_FILE
from gwlora.train import main, train_run


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


def interrupted(built, variant, out, step, **train_overrides):
    """Run until the state saved at `step` (or later), then kill the run as Ctrl-C would: patched, not a production hook."""
    save = train_module.save_run_state

    def save_then_interrupt(saved, state):
        save(saved, state)
        if state.step >= step:
            raise KeyboardInterrupt(f"test interruption after step {state.step}")

    with pytest.MonkeyPatch.context() as mp, pytest.raises(KeyboardInterrupt):
        mp.setattr(train_module, "save_run_state", save_then_interrupt)
        run(built, variant, out, **train_overrides)


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
    assert saved["val_auc"] == pytest.approx(curve.val_auc[curve.val_loss.idxmin()])  # the tested checkpoint's, not the max
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
    from gwlora.features import load_features, load_snr, write_features

    x, y, meta = load_features(features / "train")
    snr = load_snr(features / "train")
    shutil.rmtree(features / "train")
    write_features(features / "train", np.full_like(x, np.nan), y, snr, split="train", channels=meta["channels"])
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


LORA = Variant(name="lora-r4", family="lora", config_key="lora", lr=5e-3, params={
    "rank": 4, "alpha": 4.0, "target_modules": ["q_proj", "v_proj"], "dropout": 0.0, "rslora": False, "dora": False})


def test_summary_reports_costs_test_metrics_and_provenance(built, tmp_path):
    summary = run(built, LORA, tmp_path)
    assert set(summary["latency_ms"]) == {"base", "unmerged", "merged"}
    assert all(v > 0 for v in summary["latency_ms"].values())
    assert 0 <= summary["test_tpr_at_fpr"] <= 1 and summary["tpr_fpr"] == 0.01
    assert summary["checkpoint_bytes"] == sum(p.stat().st_size for p in (tmp_path / BEST_DIR).rglob("*") if p.is_file())
    assert summary["samples_per_s"] > 0 and "git_commit" in summary
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert not (tmp_path / RUN_STATE).exists()  # the run state goes once the run has finished


DECAY = {"schedule": {"name": "cosine", "warmup_fraction": 0.2}, "head_lr_multiplier": 5.0}


@pytest.mark.parametrize(
    "variant, recipe",
    [(LORA, {}), (Variant(name="full", family="full", config_key="full", lr=1e-3), {}), (LORA, DECAY),
     (Variant(name="adapter-b4", family="adapter", config_key="adapter", lr=3e-3, params={"bottleneck": 4, "adapter_style": "houlsby"}), {}),
     (Variant(name="prompt-l4", family="prompt", config_key="prompt", lr=3e-3, params={"prompt_length": 4}), {})],
    ids=["lora", "full", "lora-warmup-cosine-head-lr", "adapter", "prompt"],
)
def test_killed_run_resumes_to_the_same_result(built, tmp_path, variant, recipe, caplog):
    """A run interrupted mid-epoch and started again ends exactly like an uninterrupted run (the schedule's position included)."""
    settings = dict(epochs=3, eval_every_steps=4, **recipe)  # 6 steps per epoch: evaluations fall mid-epoch
    whole = run(built, variant, tmp_path / "whole", **settings)
    interrupted(built, variant, tmp_path / "killed", 8, **settings)
    assert (tmp_path / "killed" / RUN_STATE).exists() and not (tmp_path / "killed" / "summary.json").exists()
    with caplog.at_level("INFO", logger="gwlora"):
        resumed = run(built, variant, tmp_path / "killed", **settings)
    assert "resuming from its saved state at step 8" in caplog.text
    a = pd.read_csv(tmp_path / "whole" / "curve.csv").drop(columns="train_time_s")
    b = pd.read_csv(tmp_path / "killed" / "curve.csv").drop(columns="train_time_s")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6)
    for key in ("val_auc", "best_val_loss", "best_step", "test_auc", "test_loss", "steps"):
        assert resumed[key] == pytest.approx(whole[key], rel=1e-6), key


def test_state_saved_with_other_settings_is_not_resumed(built, tmp_path, caplog):
    interrupted(built, LORA, tmp_path, 4, eval_every_steps=4)
    other = Variant(**{**LORA.to_dict(), "lr": 1e-3})
    with caplog.at_level("INFO", logger="gwlora"):
        summary = run(built, other, tmp_path, eval_every_steps=4)
    assert "saved with other settings; starting afresh" in caplog.text and "resuming" not in caplog.text
    assert summary["steps"] == 12 and pd.read_csv(tmp_path / "curve.csv").step.tolist() == [4, 8, 12]


class Planted:
    """A pickle that runs code when loaded with weights_only=False."""

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.write_text, (pathlib.Path(MARKER[0]), "code ran"))


MARKER: list[str] = []


def test_a_planted_run_state_runs_no_code_and_the_run_starts_afresh(built, tmp_path, caplog):
    marker = tmp_path / "pwned"
    MARKER[:] = [str(marker)]
    state = tmp_path / "run" / RUN_STATE
    state.parent.mkdir(parents=True)
    torch.save({"fingerprint": Planted()}, state)  # as an older gwlora (no checksum header) or an attacker would
    with caplog.at_level("WARNING", logger="gwlora"):
        summary = run(built, LORA, tmp_path / "run")
    assert not marker.exists()
    assert f"{state}: not a gwlora run state" in caplog.text and "starting afresh" in caplog.text
    assert summary["steps"] == 12


def test_a_planted_payload_under_a_valid_checksum_is_refused_without_running(built, tmp_path, caplog):
    import hashlib
    import io

    marker = tmp_path / "pwned"
    MARKER[:] = [str(marker)]
    buffer = io.BytesIO()
    torch.save({"fingerprint": Planted()}, buffer)
    data = buffer.getvalue()
    state = tmp_path / "run" / RUN_STATE
    state.parent.mkdir(parents=True)
    state.write_bytes(b"gwlora-run-state sha256=" + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)
    with caplog.at_level("WARNING", logger="gwlora"):
        run(built, LORA, tmp_path / "run")
    assert not marker.exists() and "cannot be loaded as a run state" in caplog.text


def test_a_corrupt_run_state_is_named_and_the_run_starts_afresh(built, tmp_path, caplog):
    """Flipped bytes in the saved state must not resume silently into different results."""
    interrupted(built, LORA, tmp_path, 4, eval_every_steps=4)
    state = tmp_path / RUN_STATE
    blob = bytearray(state.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    state.write_bytes(bytes(blob))
    with caplog.at_level("INFO", logger="gwlora"):
        summary = run(built, LORA, tmp_path, eval_every_steps=4)
    assert f"{state}: checksum mismatch" in caplog.text and "resuming" not in caplog.text
    assert summary["steps"] == 12 and pd.read_csv(tmp_path / "curve.csv").step.tolist() == [4, 8, 12]


@pytest.mark.parametrize("variant", [LORA, Variant(name="frozen", family="frozen", config_key="frozen", lr=1e-3)], ids=["lora", "frozen"])
def test_a_corrupt_best_checkpoint_fails_naming_the_file(built, tmp_path, monkeypatch, variant):
    load_best = scoring.load_best

    def corrupt_then_load(model, variant, best_dir):
        weights = next(p for p in best_dir.iterdir() if p.suffix == ".safetensors")
        blob = bytearray(weights.read_bytes())
        blob[-3] ^= 0xFF
        weights.write_bytes(bytes(blob))
        load_best(model, variant, best_dir)

    monkeypatch.setattr(scoring, "load_best", corrupt_then_load)
    with pytest.raises(StageError, match=rf"{BEST_DIR}/\w+\.safetensors: missing or corrupt"):
        run(built, variant, tmp_path)
    assert not (tmp_path / "summary.json").exists()
    assert (tmp_path / BEST_DIR / CHECKSUMS_FILE).is_file()


def test_the_head_trains_at_its_own_rate_and_the_schedule_warms_up_and_decays(built):
    from gwlora.train import make_optimizer, make_schedule

    model = apply_variant(build_classifier(built["root"] / "base_model", 2, 100, built["config"]["model"]), LORA)
    optimizer = make_optimizer(model, 1e-3, 0.0, head_lr_multiplier=10.0)
    groups = {g["name"]: g for g in optimizer.param_groups}
    head = {id(p) for n, p in model.named_parameters() if p.requires_grad and ".head." in f".{n}."}
    assert {id(p) for p in groups["head"]["params"]} == head and head
    assert groups["head"]["lr"] == pytest.approx(1e-2) and groups["encoder"]["lr"] == pytest.approx(1e-3)
    schedule = make_schedule(optimizer, {"name": "linear", "warmup_fraction": 0.25}, total_steps=8)
    lrs = []
    for _ in range(8):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == 0 and lrs[2] == pytest.approx(1e-3) and lrs[1] < lrs[2]  # warm-up over 2 steps
    assert lrs[2] > lrs[5] > lrs[7] > 0 and optimizer.param_groups[0]["lr"] == pytest.approx(0)  # then linear decay to 0
    frozen = apply_variant(build_classifier(built["root"] / "base_model", 2, 100, built["config"]["model"]), Variant(name="frozen", family="frozen", lr=1e-3))
    assert [g["name"] for g in make_optimizer(frozen, 1e-3, 0.0, 10.0).param_groups] == ["head"]


def test_summary_records_the_recipe(built, tmp_path):
    summary = run(built, LORA, tmp_path, **DECAY)
    assert summary["lr"] == LORA.lr and summary["head_lr"] == pytest.approx(5 * LORA.lr)
    assert summary["schedule"] == {"name": "cosine", "warmup_fraction": 0.2, "warmup_steps": 2, "total_steps": 12}


def test_best_adapter_reloads_with_peft_to_identical_logits(built, tmp_path):
    run(built, LORA, tmp_path, epochs=3)
    config = built["config"]
    x = torch.from_numpy(np.load(built["root"] / "features" / "val" / "features.npy")[:6])

    def fresh():
        torch.manual_seed(123)  # a different head init: the adapter must bring its own head
        return build_classifier(built["root"] / "base_model", 2, 100, config["model"]).eval()

    reloaded = PeftModel.from_pretrained(fresh(), str(tmp_path / BEST_DIR)).eval()
    trained = PeftModel.from_pretrained(fresh(), str(tmp_path / BEST_DIR)).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh()(x), reloaded(x), atol=1e-4)
        assert torch.equal(reloaded(x), trained(x))
        merged = reloaded.merge_and_unload()(x)
        assert torch.allclose(trained(x), merged, atol=1e-5)


def test_full_fine_tuning_separates_a_separable_toy_set(built, tmp_path):
    """A bright band in the log-mel of class 1: full fine-tuning reaches val AUC > 0.95."""
    features = write_toy_features(tmp_path, {"train": 96, "val": 48})
    summary = run(built, Variant(name="full", family="full", config_key="full", lr=1e-3), tmp_path / "run", features=features, epochs=6)
    assert summary["val_auc"] > 0.95


# --------------------------------------------------------------------------- torch.compile


def test_compile_setting_is_validated_and_a_bare_off_reads_as_off():
    from conftest import tiny_config
    from gwlora.config import ConfigError

    with pytest.raises(ConfigError, match=r"train\.compile"):
        tiny_config(train__compile="fast")
    assert tiny_config(train__compile=False)["train"]["compile"] == "off"  # YAML's reading of `compile: off`
    assert tiny_config()["train"]["compile"] == "auto"


def test_compile_auto_is_eager_on_the_cpu_and_graphs_small_cuda_batches():
    from gwlora.train import AUTO_GRAPH_MAX_BATCH, compile_mode

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert compile_mode("auto", cpu, 8) == "off"
    assert compile_mode("auto", cuda, 8) == "reduce-overhead"
    assert compile_mode("auto", cuda, AUTO_GRAPH_MAX_BATCH + 1) == "default"
    assert compile_mode("default", cpu, 8) == "default" and compile_mode("off", cuda, 8) == "off"


def test_the_schema_states_the_compile_batch_limit_the_code_uses():
    from gwlora.train import AUTO_GRAPH_MAX_BATCH

    described = SCHEMA["properties"]["train"]["properties"]["compile"]["description"]
    assert f"up to batch {AUTO_GRAPH_MAX_BATCH};" in described


def test_a_run_state_survives_a_change_of_measurement_settings_only(built):
    """What a saved state must match: the settings that decide the weights; threads, device, latency, compile and the aggregate's keys do not."""
    from gwlora.run_state import run_fingerprint, train_stage_settings

    train = built["config"]["train"]
    fingerprint = run_fingerprint(LORA, 0, built["config"]["model"], train, 48)
    for key, value in {"threads": 7, "device": "cuda", "latency_batches": 0, "compile": "default", "lr_selection": "val_auc", "seeds": [5],
                       "lr_search": {"extend": True, "max_extensions": 3}}.items():
        assert run_fingerprint(LORA, 0, built["config"]["model"], {**train, key: value}, 48) == fingerprint, key
    for key, value in {"epochs": 9, "batch_size": 4, "weight_decay": 0.5}.items():
        assert run_fingerprint(LORA, 0, built["config"]["model"], {**train, key: value}, 48) != fingerprint, key
    assert run_fingerprint(LORA, 1, built["config"]["model"], train, 48) != fingerprint
    assert set(train) - set(train_stage_settings(train)) == {"variants", "seeds", "lr_selection", "lr_search"}  # what the workflow leaves out


def test_padded_batches_repeat_real_windows_with_zero_weight():
    from gwlora.train import padded, real_windows

    assert padded(torch.tensor([3, 4, 5]), 8).tolist() == [3, 4, 5, 3, 4, 5, 3, 4]
    assert padded(torch.tensor([1, 2]), 2).tolist() == [1, 2]
    assert real_windows(3, 5, torch.device("cpu")).tolist() == [1, 1, 1, 0, 0]


def test_a_failed_compilation_trains_eagerly_and_says_why(built, tmp_path, monkeypatch, caplog):
    def broken(model, mode):
        def forward(x):
            raise RuntimeError("forced compiler failure")
        return forward

    monkeypatch.setattr(train_module, "compile_model", broken)
    variant = Variant(name="frozen", family="frozen", lr=1e-3)
    eager = run(built, variant, tmp_path / "eager", compile="off")
    with caplog.at_level("WARNING", logger="gwlora.train"):
        fell_back = run(built, variant, tmp_path / "fallback", compile="default")
    assert "forced compiler failure" in caplog.text and "training eagerly" in caplog.text
    assert fell_back["compile"] == {"setting": "default", "mode": "off", "fallback": "RuntimeError: forced compiler failure", "static_shapes": None}
    assert eager["compile"]["mode"] == "off" and eager["compile"]["fallback"] is None
    # the failed warm-up changed nothing: the same training as the eager run
    assert pd.read_csv(tmp_path / "fallback" / "curve.csv").val_loss.tolist() == pytest.approx(pd.read_csv(tmp_path / "eager" / "curve.csv").val_loss.tolist(), rel=1e-6)


def test_compiled_training_matches_eager_on_the_cpu(built, tmp_path):
    """torch.compile (default mode) trains the toy model like eager mode, the padded last batches included (48 = 4 x 10 + 8; 32 = 20 + 12)."""
    variant = Variant(name="full", family="full", lr=1e-3)
    eager = run(built, variant, tmp_path / "eager", compile="off", batch_size=10)
    compiled = run(built, variant, tmp_path / "compiled", compile="default", batch_size=10)
    assert compiled["compile"] == {"setting": "default", "mode": "default", "fallback": None, "static_shapes": "pad"}
    assert compiled["compile_time_s"] > 0 and eager["compile_time_s"] == 0
    a, b = pd.read_csv(tmp_path / "eager" / "curve.csv"), pd.read_csv(tmp_path / "compiled" / "curve.csv")
    assert list(a.step) == list(b.step) == [5, 10] and list(a.samples_seen) == list(b.samples_seen) == [48, 96]
    for key in ("train_loss", "val_loss", "val_auc"):
        assert b[key].tolist() == pytest.approx(a[key].tolist(), rel=1e-3, abs=1e-4), key
    assert compiled["test_auc"] == pytest.approx(eager["test_auc"], abs=1e-3)


def test_a_killed_compiled_run_resumes_compiled_to_the_eager_result(built, tmp_path, caplog):
    """Resume keeps working with torch.compile: the state holds the eager module's weights; the resumed run compiles again."""
    variant = Variant(name="full", family="full", config_key="full", lr=1e-3)
    settings = dict(epochs=2, eval_every_steps=4, batch_size=10)  # 5 steps per epoch, the last one padded
    whole = run(built, variant, tmp_path / "whole", compile="off", **settings)
    interrupted(built, variant, tmp_path / "killed", 4, compile="default", **settings)
    with caplog.at_level("INFO", logger="gwlora"):
        resumed = run(built, variant, tmp_path / "killed", compile="default", **settings)
    assert "resuming from its saved state at step 4" in caplog.text and resumed["compile"]["mode"] == "default"
    assert resumed["compile_time_s"] > 0
    a, b = (pd.read_csv(tmp_path / d / "curve.csv") for d in ("whole", "killed"))
    assert list(a.step) == list(b.step)
    assert b.val_loss.tolist() == pytest.approx(a.val_loss.tolist(), rel=1e-3, abs=1e-4)
    assert resumed["test_auc"] == pytest.approx(whole["test_auc"], abs=1e-3)


BF16_VAL_LOSS_TOLERANCE = 0.05  # nats: how far the bf16 run's best val loss may lie from the fp32 run's on the toy data


def test_a_bf16_run_learns_as_well_as_an_fp32_run_and_records_why(built, tmp_path):
    features = write_toy_features(tmp_path, {"train": 96, "val": 48})  # separable: both must learn it
    variant = Variant(name="full", family="full", config_key="full", lr=1e-3)
    fp32 = run(built, variant, tmp_path / "fp32", features=features, precision="fp32", epochs=6)
    bf16 = run(built, variant, tmp_path / "bf16", features=features, precision="bf16", epochs=6)
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert bf16["precision_reason"] == "train.precision: bf16"
    assert not bf16["did_not_learn"] and bf16["best_val_loss"] < bf16["chance_val_loss"] - 0.05
    assert bf16["best_val_loss"] == pytest.approx(fp32["best_val_loss"], abs=BF16_VAL_LOSS_TOLERANCE)


def test_a_run_resumed_on_a_processor_without_bf16_units_keeps_the_precision_it_started_in(built, tmp_path, monkeypatch, caplog):
    variant = Variant(name="frozen", family="frozen", config_key="frozen", lr=1e-3)
    for name in ("amx_tile", "avx512_bf16"):
        monkeypatch.setattr(torch.cpu, f"_is_{name}_supported", lambda: True, raising=False)
    interrupted(built, variant, tmp_path, 4, precision="auto", eval_every_steps=4)  # started on an AMX machine: bf16
    for name in ("amx_tile", "avx512_bf16"):
        monkeypatch.setattr(torch.cpu, f"_is_{name}_supported", lambda: False, raising=False)
    with caplog.at_level("INFO", logger="gwlora"):
        resumed = run(built, variant, tmp_path, precision="auto", eval_every_steps=4)  # resumed on one without
    assert "resuming from its saved state at step 4" in caplog.text
    assert resumed["precision"] == "bf16" and resumed["precision_reason"].startswith("resumed")


def test_a_stop_decided_at_the_last_evaluation_is_no_early_stop_and_convergence_is_recorded(built, tmp_path):
    from gwlora.scoring import still_improving

    variant = Variant(name="full", family="full", config_key="full", lr=5e-2)  # too high: the val loss rises at the second evaluation
    summary = run(built, variant, tmp_path, epochs=2, early_stopping_patience=1)
    curve = pd.read_csv(tmp_path / "curve.csv")
    assert curve.val_loss.iloc[-1] > curve.val_loss.iloc[0]  # patience ran out at the last evaluation
    assert summary["steps"] == 12 and summary["early_stopped"] is False  # every planned step ran
    assert summary["still_improving"] == still_improving(curve.val_loss.tolist(), stopped_early=False)
    stopped = run(built, variant, tmp_path / "stopped", epochs=8, eval_every_steps=2, early_stopping_patience=2)
    assert stopped["early_stopped"] is True and stopped["still_improving"] is False
