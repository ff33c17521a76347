"""The benchmark suite cannot rot: its smoke version runs and reports every comparison against its target.

Timings are not asserted (CI machines are noisy); docs/benchmarks.md has the figures.
"""

import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO

BENCH = REPO / "benchmarks"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    done = subprocess.run([sys.executable, str(BENCH / "run.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def test_smoke_suite_prints_every_comparison_with_ratio_and_target(smoke):
    stdout, record = smoke
    numbers = [str(r["number"]) for r in record["results"]]
    assert numbers == ["1", "2", "3", "4a", "4b", "5", "6", "8a", "8b", "8c"]
    for r in record["results"]:
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
