"""Made-up run records (summary.json, curve.csv, predictions.csv), built from gwlora.records' types and written by its writers."""

import json
from dataclasses import asdict

import numpy as np

from gwlora.records import (CURVE_FILE, PREDICTIONS_FILE, Costs, CurveRow, Identity, Learning, Provenance, Quality, Rebuild, Settings, Summary,
                            write_curve, write_predictions)


def fake_predictions(path, labels, rng, audio, quality):
    """A predictions.csv as the train and evaluate stages write it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    logits = labels * quality + rng.normal(0, 1, len(labels))
    # every run scores the same test windows, so the injected SNRs are the split's, not the run's
    snr = np.where(labels == 1, 0.0 if audio else np.random.default_rng(len(labels)).uniform(8, 20, len(labels)), 0.0)
    write_predictions(path, labels, snr, logits)


def fake_encoder_cache(variant) -> dict:
    """summary.json's encoder_cache as the train stage records it: used by the frozen and partial runs."""
    used = variant.family in ("frozen", "partial")
    return {"setting": "auto", "used": used, "inputs": "pooled encoder outputs" if used else None, "precision": "fp32" if used else None,
            "source": "the encoder_outputs stage" if used else None, "compute_s": 0.0,
            "reason": None if used else f"{variant.family} trains the whole encoder: no frozen prefix"}


def fake_summary(variant, seed) -> Summary:
    """A made-up summary.json of `variant` and `seed`: the full run looks better and slower than frozen; seed 1 of full did not learn."""
    params = {"full": 100_000, "frozen": 10_000}.get(variant.family, 12_000)
    latency = {"base": 3.0} if variant.family in ("full", "frozen", "partial") else {"base": 3.0, "unmerged": 3.6}
    if variant.family in ("lora", "peft"):
        latency["merged"] = 3.05
    length = variant.params.get("prompt_length", 0)
    flat = seed == 1 and variant.family == "full"
    return Summary(
        identity=Identity(variant=variant.name, run=variant.run, family=variant.family, config_key=variant.config_key,
                          variant_config=variant.to_dict(), seed=seed, trainable_parameters=params, total_parameters=100_000,
                          trainable_percent=params / 1000),
        quality=Quality(best_val_loss=0.62 - 0.01 * seed, val_auc=0.7, best_step=8, val_accuracy=0.65, val_brier=0.22, test_auc=0.8,
                        test_loss=0.5, test_accuracy=0.7, test_tpr_at_fpr=0.3, test_brier=0.2, test_one_class=False, tpr_fpr=0.01),
        learning=Learning(initial_val_loss=0.6931, chance_val_loss=0.6931, did_not_learn=flat, val_loss_flat=flat,
                          did_not_learn_because="the val loss never fell clearly below a constant predictor's 0.6931 (best 0.6930)" if flat else "",
                          still_improving=False),
        costs=Costs(time_to_best_s=4.0, train_time_s=4.0, compile_time_s=0.0, steps=8, epochs_run=2.0, early_stopped=False,
                    step_time_ms={"full": 500.0, "frozen": 150.0}.get(variant.family, 450.0), samples_per_s=30.0, checkpoint_bytes=params * 4,
                    latency_ms=latency, latency_batch=16, latency_ms_batch1=latency, peak_memory_bytes=2**30,
                    sequence={"positions": 1500, "audio_positions": 1500 - length, "prompt_positions": length, "audio_seconds_lost": 0.02 * length}),
        settings=Settings(device="cpu", precision="fp32", precision_reason="train.precision: fp32", compile={"setting": "auto", "mode": "off", "fallback": None, "static_shapes": None},
                          batch_size=16, lr=variant.lr, head_lr=variant.lr, schedule={"name": "constant", "warmup_steps": 0, "total_steps": 8},
                          base_model="random-init", context=variant.context or "clip", pooling="mean",
                          encoder_cache=fake_encoder_cache(variant)),
        rebuild=Rebuild(model_config={}, base_model_dir="base_model", input={"channels": ["H1", "L1"], "n_frames": 100}, eval_batch_size=32),
        provenance=Provenance(versions={"python": "3.11", "torch": "2", "transformers": "5", "peft": "0.15"},
                              hardware={"cpu": "test CPU", "cpu_count": 2, "torch_threads": 1}, git_commit="abc"),
    )


def fake_matched_filter_run(run_dir, variant, seed, labels, rng, test_sets=()):
    """The matched filter's run folder as its stage writes it: summary.json (gwlora.matched_filter_stage.run_summary),
    an empty curve, predictions (network SNRs that separate the classes best of all) and matched_filter.json."""
    from gwlora.matched_filter_stage import RECORD_FILE, run_summary

    def scored():
        return {"labels": labels, "scores": labels * 4.0 + rng.normal(6, 1, len(labels))}

    def facts():
        return {"windows": len(labels), "seconds": 1.0, "windows_per_s": float(len(labels)), "oracle_trials": 40.0, "n_detectors": 2,
                "n_signal": int(labels.sum()), "outside_bank": 1, "bank_size": 17, "bank_masses": {"min": 10.0, "max": 50.0}}

    val, test = scored(), scored()
    fake_predictions(run_dir / PREDICTIONS_FILE, labels, rng, False, 4.0)
    write_curve([], run_dir / CURVE_FILE)
    for name in test_sets:
        fake_predictions(run_dir / "shift" / name / PREDICTIONS_FILE, labels, rng, False, 3.0)
        (run_dir / "shift" / name / "metrics.json").write_text(json.dumps(
            {"auc": 0.9, "tpr_at_fpr": 0.6, "accuracy": float("nan"), "brier": float("nan"), "one_class": False}))
    (run_dir / RECORD_FILE).write_text(json.dumps(
        {"bank_size": 17, "minimal_match": 0.7, "bank_placement_s": 2.0, "threads": 1, "windows_per_s": 30.0,
         "sets": {name: facts() for name in ("val", "test", *test_sets)}}))
    run_summary(variant, seed, val, test, 0.01, 4096, 1).write(run_dir)


def fake_run(run_dir, variant, seed, labels, rng, audio, test_sets=()):
    """A finished run's record: summary.json, curve.csv and predictions.csv, as train writes them, and its scores on `test_sets`."""
    run_dir.mkdir(parents=True)
    if variant.family == "matched-filter":
        return fake_matched_filter_run(run_dir, variant, seed, labels, rng, test_sets)
    quality = {"full": 1.5, "frozen": 0.6}.get(variant.family, 1.2)
    fake_predictions(run_dir / PREDICTIONS_FILE, labels, rng, audio, quality)
    for name in test_sets:
        fake_predictions(run_dir / "shift" / name / PREDICTIONS_FILE, labels, rng, audio, quality / 2)
        (run_dir / "shift" / name / "metrics.json").write_text(json.dumps(
            {"auc": 0.7, "tpr_at_fpr": 0.2, "accuracy": 0.6, "brier": 0.23, "one_class": False}))
    curve = [CurveRow(step=4, epoch=1.0, samples_seen=64, train_time_s=2.0, train_loss=0.69, val_loss=0.68, val_auc=0.6, val_accuracy=0.55, val_brier=0.24),
             CurveRow(step=8, epoch=2.0, samples_seen=128, train_time_s=4.0, train_loss=0.6, val_loss=0.62, val_auc=0.7, val_accuracy=0.65, val_brier=0.22)]
    write_curve([asdict(row) for row in curve], run_dir / CURVE_FILE)
    fake_summary(variant, seed).write(run_dir)
