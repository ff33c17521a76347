"""Stages `template_bank` and `matched_filter`: the optimal detector's run, shaped like a training run's.

``python -m gwlora.matched_filter_stage bank`` places one stochastic template bank
(:func:`gwlora.matched_filter.place_bank`) for the data settings it depends on
(:func:`bank_settings`: sample rate, segment, window, band, PSD, waveform and the
training data's mass range) and writes it as one JSON file with its checksum; the
workflow names the file by a hash of those settings, so a test set that changes only
the SNR shares the experiment's bank, and ``snakemake --cache`` shares it across
experiments. ``... score`` filters the windows of the validation and test splits and
of every shifted test set with its bank and writes, into a run folder:

* ``summary.json`` (:class:`gwlora.records.Summary`; nothing trained: no lr, loss,
  training time or latency, NaN or None where a training run has one), ``curve.csv``
  (no evaluations: its header only), ``predictions.csv`` (the test split's windows with
  the network SNR as the score in the ``logit`` column: AUCs and efficiencies are
  rank-based, so any monotone score serves);
* ``shift/<name>/predictions.csv`` and ``metrics.json`` per shifted test set, where the
  evaluate stage puts a trained run's;
* ``matched_filter.json``: what the search cost and what the oracle needs: bank size,
  minimal match, bank placement time, filtering throughput, and per scored set the
  effective number of independent noise trials of a one-template search (the oracle's
  threshold, :func:`gwlora.matched_filter.oracle_efficiency`) and the injections whose
  masses lie outside the bank's range (a test set that shifts the masses).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from .cli import StageError, atomic_dir, atomic_file, json_arg, read_json, run_stage, write_json
from .dataset import load_split
from .matched_filter import Bank, TemplateSpace, WindowFilter, place_bank, trials_from_noise
from .measure import git_commit, hardware, peak_memory_bytes, versions
from .records import (CURVE_FILE, PREDICTIONS_FILE, Costs, Identity, Learning, Provenance, Quality, Rebuild, Settings, Summary, write_curve,
                      write_predictions)
from .scoring import chance_loss, tpr_at_fpr
from .variants import Variant

log = logging.getLogger("gwlora.matched_filter_stage")

RECORD_FILE = "matched_filter.json"
BANK_DATA_KEYS = ("source", "sample_rate", "segment_seconds", "window_seconds", "band", "psd")


# --------------------------------------------------------------------------- the bank


def bank_settings(data: dict, masses: dict) -> dict:
    """What a bank depends on: the data settings its templates share with the windows, and the mass range it covers.

    `masses` is the training data's ``injection.masses``: the search is designed once, so a test set that
    shifts the masses is searched with the same range and its injections beyond it are reported.
    """
    injection = data["injection"]
    return {**{k: data[k] for k in BANK_DATA_KEYS}, "injection": {"approximant": injection["approximant"],
                                                                  "f_lower": injection["f_lower"], "masses": dict(masses)}}


def bank_key(settings: dict, spec: dict, seed: int) -> str:
    """A short hash of everything a bank depends on: its file's name, so equal settings share one bank."""
    text = json.dumps({"settings": settings, "spec": spec, "seed": seed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _checksum(record: dict) -> str:
    return hashlib.sha256(json.dumps({k: v for k, v in record.items() if k != "checksum"}, sort_keys=True).encode()).hexdigest()


def build_bank(settings: dict, spec: dict, seed: int, out: str | Path) -> dict:
    """Place the bank for `settings` at `spec`'s minimal match and write it, with its checksum, to `out`."""
    space = TemplateSpace.from_data(settings)
    start = time.perf_counter()
    bank, _ = place_bank(space, settings["injection"]["masses"], spec["minimal_match"], seed, spec["max_rejections"])
    record = {"settings": settings, "spec": spec, "bank": bank.to_dict(), "placement_s": time.perf_counter() - start}
    record["checksum"] = _checksum(record)
    write_json(out, record)
    return record


def read_bank(path: str | Path) -> tuple[TemplateSpace, Bank, dict]:
    """A bank written by :func:`build_bank`, checked against its checksum: (its template space, the bank, its record)."""
    record = read_json(path, rebuild="delete it and run the template_bank rule again")
    if not isinstance(record, dict) or record.get("checksum") != _checksum(record):
        raise StageError(f"{path}: its checksum does not match its content; delete it and run the template_bank rule again")
    b = record["bank"]
    bank = Bank(np.array(b["masses"], dtype=float).reshape(-1, 2), b["minimal_match"], b["proposals"], b["seed"])
    return TemplateSpace.from_data(record["settings"]), bank, record


# --------------------------------------------------------------------------- the workflow's plan (workflow/rules/matched_filter.smk)


def workflow_banks(config: dict) -> dict[str, tuple[str, dict]]:
    """Per scored data set (``test``, which val shares, and each ``shift-<name>``): its bank's (key, settings); {}
    unless the validated `config` has the family. Equal settings give equal keys: one bank for them all."""
    from .config import shifted_splits, split_source
    from .families.matched_filter import NAME

    spec = config["train"]["variants"].get(NAME)
    if spec is None:
        return {}
    masses = config["data"]["injection"]["masses"]
    out = {}
    for split in ["test", *shifted_splits(config)]:
        settings = bank_settings(split_source(config, split)[0], masses)
        out[split] = (bank_key(settings, spec, config["train"]["seeds"][0]), settings)
    return out


def run_files(run_dir: str | None, test_sets) -> list[str]:
    """The files of the matched filter's run `run_dir` that aggregate reads (none without one)."""
    if run_dir is None:
        return []
    return [f"{run_dir}/summary.json", *(f"{run_dir}/shift/{name}/metrics.json" for name in test_sets)]


# --------------------------------------------------------------------------- scoring


def score_split(data_dir: str | Path, bank_path: str | Path, threads: int = 1) -> dict:
    """Every window of a data split scored by its bank: labels, SNRs, scores, the time taken and what the oracle needs."""
    ds, build = load_split(data_dir)
    space, bank, record = read_bank(bank_path)
    masses = record["settings"]["injection"]["masses"]
    expected = bank_settings(build["data_config"], masses)
    if expected != record["settings"]:
        raise StageError(f"{data_dir}: its data settings are not those {bank_path} was placed for; run the template_bank rule for them")
    columns = ds.with_format("numpy")
    windows, labels, snr = np.asarray(columns["strain"]), np.asarray(columns["label"]), np.asarray(columns["snr"], dtype=float)
    detectors = list(build["detectors"])
    start = time.perf_counter()
    scores = WindowFilter(space, bank, detectors, threads).network_snr(windows)
    seconds = time.perf_counter() - start
    # the oracle's noise: one template (the bank's middle one) maximised over time only, on the split's noise windows
    middle = bank.masses[np.argsort(bank.masses.sum(axis=1))[len(bank.masses) // 2]][None]
    one = WindowFilter(space, Bank(middle, bank.minimal_match, 1, bank.seed), detectors, threads)
    trials = trials_from_noise(one.network_snr(windows[labels == 0]) ** 2, len(detectors))
    m1, m2 = np.asarray(columns["mass1"], dtype=float), np.asarray(columns["mass2"], dtype=float)
    outside = (labels == 1) & ((m2 < masses["min"]) | (m1 > masses["max"]))
    return {"labels": labels, "snr": snr, "scores": scores, "seconds": seconds, "n_detectors": len(detectors), "bank": bank,
            "bank_record": record, "oracle_trials": trials, "n_signal": int(labels.sum()), "outside_bank": int(outside.sum())}


def metrics(scored: dict, fpr: float) -> dict:
    """AUC and TPR at `fpr` of the network SNR; accuracy and Brier score need a probability, which an SNR is not (NaN)."""
    y, s = scored["labels"], scored["scores"]
    both = 0 < y.sum() < len(y)
    return {"auc": float(roc_auc_score(y, s)) if both else math.nan, "tpr_at_fpr": tpr_at_fpr(y, s, fpr) if both else math.nan,
            "accuracy": math.nan, "brier": math.nan, "one_class": False}


def _set_record(scored: dict) -> dict:
    return {"windows": len(scored["labels"]), "seconds": scored["seconds"], "windows_per_s": len(scored["labels"]) / scored["seconds"],
            "oracle_trials": scored["oracle_trials"], "n_detectors": scored["n_detectors"], "n_signal": scored["n_signal"],
            "outside_bank": scored["outside_bank"], "bank_size": len(scored["bank"].masses),
            "bank_masses": scored["bank_record"]["settings"]["injection"]["masses"]}


def run_summary(variant: Variant, seed: int, val: dict, test: dict, fpr: float, bank_bytes: int, threads: int) -> Summary:
    """The run's summary.json: the search's quality on val and test, and a training run's fields it has not (NaN, None, 0)."""
    v, t = metrics(val, fpr), metrics(test, fpr)
    nan = math.nan
    return Summary(
        identity=Identity(variant=variant.name, run=variant.run, family=variant.family, config_key=variant.config_key,
                          variant_config=variant.to_dict(), seed=seed, trainable_parameters=0, total_parameters=0, trainable_percent=0.0),
        quality=Quality(best_val_loss=nan, val_auc=v["auc"], best_step=0, val_accuracy=nan, val_brier=nan, test_auc=t["auc"], test_loss=None,
                        test_accuracy=None, test_tpr_at_fpr=t["tpr_at_fpr"], test_brier=None, test_one_class=False, tpr_fpr=fpr),
        learning=Learning(initial_val_loss=None, chance_val_loss=chance_loss(val["labels"]), did_not_learn=False, val_loss_flat=False,
                          did_not_learn_because="", still_improving=False),
        costs=Costs(time_to_best_s=nan, train_time_s=nan, compile_time_s=0.0, steps=0, epochs_run=0.0, early_stopped=False, step_time_ms=nan,
                    samples_per_s=nan, checkpoint_bytes=bank_bytes, latency_ms={},  # its throughput: matched_filter.json
                    latency_batch=0, latency_ms_batch1={}, sequence={"positions": None, "audio_positions": None, "prompt_positions": None,
                                                                     "audio_seconds_lost": None},
                    peak_memory_bytes=peak_memory_bytes(torch.device("cpu"))),
        settings=Settings(device="cpu", precision="fp32", precision_reason="the matched filter: float32 correlations, float64 sums",
                          compile={}, batch_size=0, lr=nan, head_lr=None, schedule={}, base_model="none (a template bank)", context="clip",
                          pooling="none",
                          encoder_cache={"setting": "off", "used": False, "inputs": None, "precision": None, "source": None, "compute_s": 0.0,
                                         "reason": "the matched filter has no encoder: it correlates templates with the strain"}),
        rebuild=Rebuild(model_config={}, base_model_dir="", input={"channels": [], "n_frames": 0}, eval_batch_size=0),
        provenance=Provenance(versions=versions(), hardware={**hardware(torch.device("cpu")), "fft_threads": threads}, git_commit=git_commit()),
    )


def score_run(variant: Variant, seed: int, val_dir, test_dir, bank, shifted: dict[str, tuple], fpr: float, out_dir, threads: int = 1) -> dict:
    """The matched filter's run folder (module docstring) from the val and test splits (bank `bank`) and the shifted
    test sets `shifted` (name -> (data directory, bank file)); returns matched_filter.json's record."""
    sets = {"val": score_split(val_dir, bank, threads), "test": score_split(test_dir, bank, threads)}
    with atomic_dir(out_dir) as tmp:
        test = sets["test"]
        write_predictions(tmp / PREDICTIONS_FILE, test["labels"], test["snr"], test["scores"])
        write_curve([], tmp / CURVE_FILE)  # nothing trained: no evaluation
        for name, (data_dir, shift_bank) in shifted.items():
            sets[name] = scored = score_split(data_dir, shift_bank, threads)
            write_predictions(tmp / "shift" / name / PREDICTIONS_FILE, scored["labels"], scored["snr"], scored["scores"])
            write_json(tmp / "shift" / name / "metrics.json", {"variant": variant.name, "run": variant.run, "lr": variant.lr, "seed": seed,
                                                               "split": "test", "n_windows": len(scored["labels"]),
                                                               "n_signal": scored["n_signal"], "tpr_fpr": fpr, **metrics(scored, fpr),
                                                               "outside_bank": scored["outside_bank"]})
        record = {"bank_size": len(sets["test"]["bank"].masses), "minimal_match": sets["test"]["bank"].minimal_match,
                  "bank_placement_s": sets["test"]["bank_record"]["placement_s"], "threads": threads,
                  "windows_per_s": sum(len(s["labels"]) for s in sets.values()) / sum(s["seconds"] for s in sets.values()),
                  "sets": {name: _set_record(s) for name, s in sets.items()}}
        write_json(tmp / RECORD_FILE, record)
        run_summary(variant, seed, sets["val"], test, fpr, Path(bank).stat().st_size, threads).write(tmp)
    return record


# --------------------------------------------------------------------------- entry point


def _parser(p):
    sub = p.add_subparsers(dest="command", required=True)
    bank = sub.add_parser("bank", help="place one template bank")
    bank.add_argument("--settings", type=json_arg, required=True, help="its data settings, as bank_settings() makes them (JSON)")
    bank.add_argument("--spec", type=json_arg, required=True, help="train.variants.matched-filter (JSON)")
    bank.add_argument("--seed", type=int, required=True, help="the config's seed: the bank's random placement")
    bank.add_argument("--out", required=True, help="the bank's JSON file")
    score = sub.add_parser("score", help="score the val and test splits and every shifted test set into a run folder")
    score.add_argument("--variant", type=json_arg, required=True, help="the matched filter's variant (Variant.to_dict, JSON)")
    score.add_argument("--seed", type=int, required=True, help="the run's seed (its folder and records; nothing random is drawn)")
    score.add_argument("--val", required=True, help="the val split's data directory")
    score.add_argument("--test", required=True, help="the test split's data directory")
    score.add_argument("--bank", required=True, help="the bank of the val and test splits")
    score.add_argument("--shift", nargs=3, action="append", default=[], metavar=("NAME", "DATA", "BANK"), help="a shifted test set")
    score.add_argument("--fpr", type=float, required=True, help="train.tpr_at_fpr")
    score.add_argument("--threads", type=int, default=1, help="FFT workers")
    score.add_argument("--out", required=True, help="the run folder")


def _run(args):
    """Place a template bank, or score the study's windows with the matched filter."""
    if args.command == "bank":
        record = build_bank(args.settings, args.spec, args.seed, args.out)
        log.info("bank of %d templates at minimal match %g in %.1f s -> %s", record["bank"]["size"], args.spec["minimal_match"],
                 record["placement_s"], args.out)
        return
    record = score_run(Variant.from_dict(args.variant), args.seed, args.val, args.test, args.bank,
                       {name: (data, bank) for name, data, bank in args.shift}, args.fpr, args.out, args.threads)
    log.info("matched filter: bank of %d, %.1f windows/s with %d thread(s) -> %s", record["bank_size"], record["windows_per_s"],
             args.threads, args.out)


def main(argv=None) -> int:
    return run_stage("matched-filter", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
