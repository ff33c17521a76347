"""The benchmark suite cannot rot: its smoke version runs and reports every comparison against its target.

Timings are not asserted (CI machines are noisy); docs/benchmarks.md has the figures.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO

from gwlora.cli import StageError

BENCH = REPO / "benchmarks"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    done = subprocess.run([sys.executable, str(BENCH / "run.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)  # 7 comparisons; 300 s ran out on a loaded 2-core machine
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def test_smoke_suite_prints_every_comparison_with_ratio_and_target(smoke):
    stdout, record = smoke
    numbers = [str(r["number"]) for r in record["results"]]
    assert numbers[:7] == ["1", "2", "3", "4a", "4b", "5", "6"] and numbers[-3:] == ["8a", "8b", "8c"]
    for r in record["results"][:7]:
        assert r["ratio"] is not None and r["ratio"] > 0, r
        assert r["target"][:2] in (">=", "<=", "< "), r
        assert r["verdict"] in ("PASS", "MISS"), r
        assert f"[{r['number']}] " in stdout and f"target {r['target']}" in stdout
    assert "| # | comparison |" in stdout  # the summary table


def test_encoder_flop_formula_matches_torch_flop_counter(tmp_path):
    """gpu.py's MFU rests on encoder_flops: check it against torch's own count on a small encoder."""
    sys.path.insert(0, str(BENCH))
    from gpu import encoder_flops
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import WhisperConfig, WhisperModel

    shape = {"d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 4, "encoder_ffn_dim": 256, "num_mel_bins": 80}
    cfg = WhisperConfig(**shape, decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64)
    cfg._attn_implementation = "eager"  # explicit matmuls, which the counter sees (SDPA on a CPU it may not)
    encoder = WhisperModel(cfg).encoder.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder(input_features=torch.randn(1, 80, 3000))
    assert encoder_flops(shape, 3000) == pytest.approx(counter.get_total_flops(), rel=0.02)


def test_gpu_script_parses_the_targets_section_and_reads_the_studys_settings():
    """gpu.py --only targets (issue 14) is what a GPU machine runs; its study settings come from config/config.yaml."""
    import yaml

    sys.path.insert(0, str(BENCH))
    from gpu import parse, study_settings

    args = parse(["--only", "targets", "--budget", "420"])
    assert args.only == "targets" and args.budget == 420 and parse([]).only == "all"
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert study_settings() == {"context": config["model"]["context"], "batch": config["train"]["batch_size"]}


def test_gpu_method_latency_times_every_method_at_batch_1_and_the_study_batch(tmp_path):
    """gpu.py's latency section, on the CPU with the smoke model: every method, both batch sizes, merged where peft merges."""
    sys.path.insert(0, str(BENCH))
    from gpu import TINY, build_model_dir, method_latency

    rows = method_latency(build_model_dir(TINY, tmp_path / "model"), torch.device("cpu"), frames=100, batches=(1, 4), reps=1)
    assert [(r["variant"], r["batch"]) for r in rows] == [
        (v, b) for v in ("lora-r8", "bitfit", "adapter-b8", "adapter-b64", "prompt-l4", "prompt-l16", "peft-ia3") for b in (1, 4)]
    assert all(r["base_ms"] > 0 and r["unmerged_ms"] > 0 for r in rows)
    assert {r["variant"] for r in rows if "merged_ms" in r} == {"lora-r8", "peft-ia3"}  # adapters and prompts cannot merge


def test_precision_comparison_names_the_processor_and_whether_it_has_native_bf16(smoke):
    """Comparison 7 (issue 20): each family in fp32 and bf16; the AMX targets are judged only where bf16 is native."""
    from gwlora.precision import cpu_bf16_units

    stdout, record = smoke
    sevens = {r["number"]: r for r in record["results"] if str(r["number"]).startswith("7-")}
    assert set(sevens) == {"7-full", "7-frozen", "7-partial-top1", "7-lora-r8", "7-bitfit", "7-adapter-b8", "7-prompt-l16",
                           "7-peft-ia3", "7-attn"}
    assert sevens["7-full"]["target"] == ">= 3" and sevens["7-lora-r8"]["target"] == ">= 3.5"
    assert all(r["extra"]["fp32_step_s"] > 0 and r["extra"]["bf16_step_s"] > 0 for n, r in sevens.items() if n != "7-attn")
    assert {"50/fp32", "50/bf16"} <= set(sevens["7-attn"]["extra"])  # the clip's 50 positions, both precisions
    if not cpu_bf16_units():
        assert "no native bf16 matrix unit" in stdout and sevens["7-full"]["verdict"] == "n/a"


def write_run(results, run, logits, labels, seed=0):
    from gwlora.records import write_predictions

    out = results / "runs" / run / f"seed{seed}"
    out.mkdir(parents=True)
    write_predictions(out / "predictions.csv", labels, np.zeros(len(labels)), logits)


def test_precision_agreement_pairs_the_runs_of_two_results_folders(tmp_path, capsys):
    """benchmarks/precision_agreement.py: per run, delta AUC with its interval; a clearly worse run does not cover 0."""
    sys.path.insert(0, str(BENCH))
    from precision_agreement import main

    rng = np.random.default_rng(0)
    labels = np.arange(200) % 2
    signal = labels + rng.normal(0, 0.7, 200)
    for name, frozen_logits in (("fp32", signal), ("bf16", signal + rng.normal(0, 0.01, 200))):
        write_run(tmp_path / name, "lora-r8", signal if name == "fp32" else signal + 1e-3, labels)
        write_run(tmp_path / name, "frozen", frozen_logits if name == "fp32" else rng.normal(0, 1, 200), labels)
        write_run(tmp_path / name, "full/lr1e-05", signal, labels)  # a variant with an lr grid: one folder more
        shifted = tmp_path / name / "runs" / "full" / "lr1e-05" / "seed0" / "shift" / "quiet"  # a shifted set's scores: not a run
        shifted.mkdir(parents=True)
        (shifted / "predictions.csv").write_text((tmp_path / name / "runs" / "lora-r8" / "seed0" / "predictions.csv").read_text())
    assert main([str(tmp_path / "fp32"), str(tmp_path / "bf16"), "--resamples", "200"]) == 2  # one run disagrees
    table = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|") for line in table.splitlines() if line.startswith("| ") and "---" not in line}
    assert set(rows) == {"run", "lora-r8", "frozen", "full/lr1e-05"}
    assert rows["lora-r8"][5].strip() == "yes" and rows["frozen"][5].strip() == "NO"
    assert "2 of 3 runs" in table


def test_precision_agreement_sets_a_difference_against_the_seeds_spread(tmp_path, capsys):
    """With several seeds a side, a run pair that parted in training (one seed far off, the others equal) is not
    called a precision difference, though that seed alone differs far beyond its windows' interval."""
    sys.path.insert(0, str(BENCH))
    from precision_agreement import agreement, predictions_of

    rng = np.random.default_rng(1)
    labels = np.arange(2000) % 2
    for seed, shift in enumerate((0.0, 0.15, -0.15)):  # per-seed differences about 0, +0.04, -0.04
        signal = labels + rng.normal(0, 1, 2000)
        write_run(tmp_path / "fp32", "lora-r8", signal + shift * labels, labels, seed)
        write_run(tmp_path / "bf16", "lora-r8", signal, labels, seed)
    write_run(tmp_path / "bf16", "lora-r8/lr1e-4", signal, labels)  # only in one folder: not compared
    (row,) = agreement(predictions_of(tmp_path / "fp32"), predictions_of(tmp_path / "bf16"), n_resamples=400)
    assert row["run"] == "lora-r8" and row["seeds"] == [0, 1, 2] and row["n_seeds"] == 3
    assert row["per_seed"][1] > 0.02 and row["per_seed"][2] < -0.02 and row["covers_0"]
    assert row["delta"] == pytest.approx(np.mean(row["per_seed"]))


def test_precision_agreement_sets_each_verdict_against_the_baseline_side_by_side(tmp_path, capsys):
    """--baseline: each run's verdict against the baseline in both folders; a verdict that changes is flagged."""
    sys.path.insert(0, str(BENCH))
    from precision_agreement import main

    rng = np.random.default_rng(2)
    labels = np.arange(600) % 2
    for seed in range(3):
        for name in ("fp32", "bf16"):
            write_run(tmp_path / name, "full/lr1e-05", 2 * labels + rng.normal(0, 1, 600), labels, seed)
            write_run(tmp_path / name, "frozen", 0.3 * labels + rng.normal(0, 1, 600), labels, seed)  # lower in both
            # as good as full in fp32, far worse in bf16: the verdict changes
            write_run(tmp_path / name, "lora-r8", (2 if name == "fp32" else 0.3) * labels + rng.normal(0, 1, 600), labels, seed)
    assert main([str(tmp_path / "fp32"), str(tmp_path / "bf16"), "--resamples", "200", "--baseline", "full"]) == 2
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|") for line in out.split("same verdict?")[1].splitlines() if line.startswith("| ")}
    assert rows["frozen"][2].strip().startswith("lower") and rows["frozen"][4].strip() == "yes"
    assert rows["lora-r8"][2].strip().startswith("indistinguishable") and rows["lora-r8"][3].strip().startswith("lower")
    assert rows["lora-r8"][4].strip() == "NO" and "(3 seeds)" in rows["frozen"][2]
    assert main([str(tmp_path / "fp32"), str(tmp_path / "bf16"), "--baseline", "adapter"]) == 1
    assert "no run of the baseline 'adapter'" in capsys.readouterr().err


def test_precision_agreement_trains_each_selected_run_once_per_precision_and_seed(tmp_path, monkeypatch, capsys):
    """`train` lists the study's selected runs, each seed and precision once, with the study's settings and features;
    finished runs are kept; a study without its tables is named."""
    import shutil

    sys.path.insert(0, str(BENCH))
    from precision_agreement import train_main, training_jobs

    shutil.copy(REPO / "config" / "demo.yaml", tmp_path / "study.yaml")
    monkeypatch.chdir(tmp_path)
    assert train_main(["--configfile", "study.yaml"]) == 1
    assert "results/demo/tables/summary.csv does not exist" in capsys.readouterr().err
    results = tmp_path / "results" / "demo"
    (results / "tables").mkdir(parents=True)
    (results / "tables" / "summary.csv").write_text("variant,lr\nfull,1e-05\nlora-r8,0.0003\nmatched-filter,\n")
    for run, variant, lr in (("full/lr1e-05", "full", 1e-5), ("full/lr0.0001", "full", 1e-4), ("lora-r8", "lora-r8", 3e-4)):
        out = results / "runs" / run / "seed0"
        out.mkdir(parents=True)
        (out / "summary.json").write_text(json.dumps({
            "run": run, "variant": variant, "lr": lr, "precision": "bf16", "train_time_s": 100.0,
            "model_config": {"context": "clip"}, "variant_config": {"name": variant, "family": variant.split("-")[0], "lr": lr, "run": run},
        }))
    done = tmp_path / "results" / "demo-precision" / "fp32" / "runs" / "lora-r8" / "seed1"
    done.mkdir(parents=True)
    (done / "summary.json").write_text("{}")
    jobs = training_jobs(Path("study.yaml"), [0, 1], ["fp32", "bf16"], None)
    dirs = [d.relative_to("results/demo-precision").as_posix() for _, d, _ in jobs]
    assert sorted(dirs) == sorted(f"{p}/runs/{r}/seed{s}" for p in ("fp32", "bf16") for r in ("full/lr1e-05", "lora-r8") for s in (0, 1)
                                  if (p, r, s) != ("fp32", "lora-r8", 1))
    assert dirs[0].startswith("fp32/") and dirs[-1].endswith("seed1")  # seed by seed, the slower precision first
    command = jobs[0][0]
    assert command[1:3] == ["-m", "gwlora.train"] and command[command.index("--threads") + 1] == "1"
    assert json.loads(command[command.index("--train-config") + 1])["precision"] == "fp32"
    assert json.loads(command[command.index("--variant") + 1])["lr"] == 1e-5
    assert command[command.index("--train-features") + 1] == str(Path("results/demo/features/train"))
    (results / "tables" / "summary.csv").write_text("variant,lr\nfull,3e-05\n")
    with pytest.raises(StageError, match="no run of full at its selected lr 3e-05"):
        training_jobs(Path("study.yaml"), [0], ["fp32"], None)


def test_interval_coverage_shows_the_windows_only_interval_missing_a_true_zero():
    """benchmarks/interval_coverage.py: with runs that spread, the windows-only interval misses a true zero far more
    often than gwlora.compare's (a fixed seed, so the counts are the same on every machine)."""
    sys.path.insert(0, str(BENCH))
    from interval_coverage import coverage

    c = coverage(n_seeds=3, trials=40, spread=0.25, n_resamples=200)
    assert set(c) == {"windows only", "two-level bootstrap", "gwlora.compare"}
    assert c["windows only"] < 0.6 < 0.85 <= c["gwlora.compare"]
