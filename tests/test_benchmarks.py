"""The benchmark suite cannot rot: its smoke version runs and reports every comparison against its target.

Timings are not asserted (CI machines are noisy); docs/benchmarks.md has the figures.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO

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


def write_run(results, run, logits, labels):
    from gwlora.records import write_predictions

    out = results / "runs" / run / "seed0"
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
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ") and "seed0" in line}
    assert set(rows) == {"lora-r8", "frozen", "full/lr1e-05"}
    assert rows["lora-r8"].rstrip().endswith("| yes |") and rows["frozen"].rstrip().endswith("| NO |")
    assert "2 of 3 runs" in table
