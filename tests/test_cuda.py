"""The CUDA path of training: bf16 autocast, fused AdamW, device-resident or pinned features, GPU memory.

Skipped without a GPU (CI has none); run on a CUDA machine with
`python -m pytest tests/test_cuda.py`. Needs no LALSuite or `datasets`: the
features are a separable toy set written directly.
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from peft import PeftModel

from conftest import tiny_config, write_toy_features
from gwlora import scoring
from gwlora.base_model import prepare
from gwlora.variants import Variant
from gwlora.model import build_classifier
from gwlora.scoring import BEST_DIR
from gwlora.train import train_run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

LORA = Variant(name="lora-r4", family="lora", config_key="lora", lr=1e-3, params={
    "rank": 4, "alpha": 4.0, "target_modules": ["q_proj", "v_proj"], "dropout": 0.0, "rslora": False, "dora": False})
FULL = Variant(name="full", family="full", config_key="full", lr=1e-3)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A tiny random Whisper and a separable toy feature set (a bright band in class 1's log-mel)."""
    root = tmp_path_factory.mktemp("cuda")
    # an audio-folder data section: its validation needs no LALSuite (the features below are written directly)
    data = {"source": "audiofolder", "audiofolder": {"path": "unused", "positive_class": "signal"}, "splits": {"train": 256, "val": 64, "test": 64}}
    config = tiny_config(data=data, train__device="cuda", train__precision="auto")  # auto: bf16 autocast on CUDA
    prepare(config["model"], config["seed"], root / "base_model")
    write_toy_features(root, {"train": 256, "val": 64, "test": 64})
    return root, config


def run(toy, variant, out, **train_overrides):
    root, config = toy
    return train_run(
        features={s: root / "features" / s for s in ("train", "val", "test")},
        model_dir=root / "base_model", model_config=config["model"],
        train_config={**config["train"], "epochs": 4, "batch_size": 32, **train_overrides},
        variant=variant, seed=0, out_dir=out,
    )


@pytest.mark.parametrize("variant", [FULL, LORA], ids=lambda v: v.name)
def test_trains_on_cuda_in_bf16(toy, tmp_path, variant):
    summary = run(toy, variant, tmp_path)
    assert summary["device"].startswith("cuda") and summary["precision"] == "bf16"
    assert summary["hardware"]["gpu"] and summary["peak_memory_bytes"] > 0
    assert summary["val_auc"] > 0.95 and summary["test_auc"] > 0.95
    assert set(summary["latency_ms"]) >= {"base"}
    pred = pd.read_csv(tmp_path / "predictions.csv")
    assert len(pred) == 64 and np.isfinite(pred.logit).all()
    print(json.dumps({k: summary[k] for k in ("variant", "step_time_ms", "samples_per_s", "peak_memory_bytes", "latency_ms")}))


def test_pinned_host_features_train_like_resident_ones(toy, tmp_path, monkeypatch):
    """Splits too large for the GPU stay in pinned host memory; training reaches the same quality."""
    resident = run(toy, LORA, tmp_path / "resident")
    monkeypatch.setattr(scoring, "DEVICE_RESIDENT_BYTES", 0)
    pinned = run(toy, LORA, tmp_path / "pinned")
    assert pinned["val_auc"] == pytest.approx(resident["val_auc"], abs=0.02)
    assert pinned["test_auc"] > 0.95


def test_cuda_adapter_reloads_on_cpu(toy, tmp_path):
    """An adapter trained on the GPU loads on a CPU-only machine and merges to the same logits."""
    root, config = toy
    run(toy, LORA, tmp_path)
    x = torch.from_numpy(np.load(root / "features" / "val" / "features.npy")[:8])
    model = PeftModel.from_pretrained(build_classifier(root / "base_model", 2, 100, config["model"]).eval(), str(tmp_path / BEST_DIR)).eval()
    with torch.no_grad():
        unmerged = model(x)
        merged = model.merge_and_unload()(x)
    assert torch.allclose(unmerged, merged, atol=1e-5)


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_training_matches_eager_in_bf16(toy, tmp_path, mode):
    """torch.compile (CUDA graphs included) trains like eager mode within bf16 tolerance; 256 = 7 x 36 + 4: the last batch is padded."""
    eager = run(toy, FULL, tmp_path / "eager", compile="off", batch_size=36)
    compiled = run(toy, FULL, tmp_path / "compiled", compile=mode, batch_size=36)
    assert compiled["compile"] == {"setting": mode, "mode": mode, "fallback": None, "static_shapes": "pad"}
    assert compiled["compile_time_s"] > 0 and eager["compile_time_s"] == 0
    a, b = (pd.read_csv(tmp_path / d / "curve.csv") for d in ("eager", "compiled"))
    assert list(a.step) == list(b.step) and list(a.samples_seen) == list(b.samples_seen)
    assert b.train_loss.tolist() == pytest.approx(a.train_loss.tolist(), rel=0.05, abs=0.02)  # bf16: kernels differ in rounding
    assert b.val_loss.tolist() == pytest.approx(a.val_loss.tolist(), rel=0.05, abs=0.02)
    assert compiled["test_auc"] == pytest.approx(eager["test_auc"], abs=0.02) and compiled["test_auc"] > 0.95
    print(json.dumps({mode: {k: compiled[k] for k in ("step_time_ms", "compile_time_s")}, "eager": eager["step_time_ms"]}))


def test_auto_compiles_with_cuda_graphs_at_small_batches(toy, tmp_path):
    summary = run(toy, LORA, tmp_path, compile="auto", epochs=1)
    assert summary["compile"]["mode"] == "reduce-overhead" and summary["compile"]["fallback"] is None
    assert summary["test_auc"] > 0.9


METHODS = [
    Variant(name="bitfit", family="bitfit", config_key="bitfit", lr=1e-2),
    Variant(name="adapter-b8", family="adapter", config_key="adapter", lr=3e-3, params={"bottleneck": 8, "adapter_style": "houlsby"}),
    Variant(name="prompt-l4", family="prompt", config_key="prompt", lr=3e-3, params={"prompt_length": 4}),
    Variant(name="peft-ia3", family="peft", config_key="peft-ia3", lr=1e-2, params={
            "peft_type": "IA3", "peft_config": {"target_modules": ["k_proj", "v_proj", "fc2"], "feedforward_modules": ["fc2"]}}),
]


@pytest.mark.parametrize("variant", METHODS, ids=lambda v: v.name)
def test_other_methods_train_on_cuda_and_reload_on_the_cpu(toy, tmp_path, variant):
    """Adapters, prompts, BitFit and a peft method under bf16 autocast; the best checkpoint scores the same on a CPU."""
    from gwlora.families import apply_variant
    from gwlora.scoring import load_best

    root, config = toy
    summary = run(toy, variant, tmp_path)
    assert summary["precision"] == "bf16" and summary["val_auc"] > 0.9
    assert {"base", "unmerged"} <= set(summary["latency_ms"]) and {"base", "unmerged"} <= set(summary["latency_ms_batch1"])
    x = torch.from_numpy(np.load(root / "features" / "test" / "features.npy"))
    cpu = apply_variant(build_classifier(root / "base_model", 2, 100, config["model"]), variant)
    load_best(cpu, variant, tmp_path / BEST_DIR)
    with torch.no_grad():
        logits = cpu.eval()(x).numpy()
    saved = pd.read_csv(tmp_path / "predictions.csv").logit.to_numpy()
    assert np.corrcoef(logits, saved)[0, 1] > 0.99  # bf16 on the GPU, fp32 here: close, not equal
    print(json.dumps({k: summary[k] for k in ("variant", "step_time_ms", "latency_ms", "latency_ms_batch1")}))
