"""The method families as units: the registry, the schema's family section, a family added from outside, AdaLoRA's hook."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from conftest import SCHEMA, tiny_config, write_toy_features
from gwlora import families
from gwlora.config import ConfigError, Variant, expand_variants, validate
from gwlora.families.family import Family, freeze_encoder
from gwlora.train import BEST_DIR, RUN_STATE
from test_train import interrupted, run


def test_the_schemas_family_section_is_the_registrys():
    """Every family's keys appear in the schema under train.variants, and nothing else does."""
    section = SCHEMA["properties"]["train"]["properties"]["variants"]
    assert set(section["properties"]) == {f.name for f in families.FAMILIES.values() if f.plain_key}
    assert set(section["patternProperties"]) == {f.pattern for f in families.FAMILIES.values() if f.pattern}


def test_family_order_and_the_methods_come_from_the_registry():
    assert list(families.FAMILIES) == ["full", "frozen", "partial", "lora", "bitfit", "adapter", "prompt", "peft", "matched-filter"]
    assert families.method_families() == ("lora", "bitfit", "adapter", "prompt", "peft")


def test_an_unknown_family_is_named_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown method family 'lora2' \(known: full, frozen, partial, lora, .*peft, matched-filter\)"):
        families.what_trains({"family": "lora2", "rank": 8})
    with pytest.raises(ConfigError, match="unknown method family 'lora2'"):
        families.sort_key({"family": "lora2", "config_key": "lora2"})
    with pytest.raises(ConfigError, match=r"train\.variants\.ia3: no method family is configured by this key"):
        expand_variants({"variants": {"ia3": {}}, "lr": 1e-3})


@pytest.mark.parametrize("record, text", [
    ({"family": "full"}, "everything"),
    ({"family": "frozen"}, "head only"),
    ({"family": "partial", "layers": 4.0}, "top 4 layers + head"),
    ({"family": "lora", "rank": 8.0}, "LoRA A, B (rank 8) + head"),
    ({"family": "bitfit"}, "encoder biases + head"),
    ({"family": "adapter", "bottleneck": 16.0, "adapter_style": "pfeiffer"}, "pfeiffer adapters (bottleneck 16) + head"),
    ({"family": "prompt", "prompt_length": 4.0}, "4 prompt vectors + head"),
    ({"family": "peft", "peft_type": "IA3"}, "peft IA3 + head"),
], ids=lambda v: v["family"] if isinstance(v, dict) else "")
def test_what_trains_reads_a_table_row(record, text):
    """A row of summary.csv (integers read back as floats) is enough for the deck's "what trains" column."""
    assert families.what_trains(record) == text


def test_a_record_made_before_params_is_read():
    """summary.json of runs made before Variant.params (every family's field at the top level) still reads."""
    old = {"name": "lora-r8", "family": "lora", "lr": 1e-3, "run": "lora-r8", "config_key": "lora", "layers": None, "rank": 8,
           "alpha": 8.0, "target_modules": ["q_proj", "v_proj"], "dropout": 0.0, "rslora": False, "dora": False, "bottleneck": None,
           "adapter_style": None, "prompt_length": None, "peft_type": None, "peft_config": None}
    variant = Variant.from_dict(old)
    assert variant.params == {"rank": 8, "alpha": 8.0, "target_modules": ["q_proj", "v_proj"], "dropout": 0.0, "rslora": False, "dora": False}
    assert Variant.from_dict(variant.to_dict()) == variant
    assert variant.record() == {"name": "lora-r8", "family": "lora", "lr": 1e-3, "run": "lora-r8", "config_key": "lora", **variant.params}
    adapter = {**old, "name": "adapter-b8", "run": "adapter-b8", "family": "adapter", "config_key": "adapter", "rank": None, "alpha": None,
               "target_modules": [], "bottleneck": 8, "adapter_style": "houlsby"}
    assert Variant.from_dict(adapter).params == {"bottleneck": 8, "adapter_style": "houlsby"}


class LayerNorms(Family):
    """An example family defined outside the package: only the encoder's layer norms (and the head) train."""

    name = "layernorm"
    method = True

    def apply(self, model, variant):
        freeze_encoder(model)
        for module in model.encoder.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.requires_grad_(True)
        return model

    def trains(self, record):
        return "encoder layer norms + head"


@pytest.fixture
def layernorm_family(monkeypatch):
    """The example family registered for one test, and the schema's section for it (what its config would add)."""
    monkeypatch.setattr(families, "FAMILIES", dict(families.FAMILIES))
    families.register(LayerNorms())
    schema = copy.deepcopy(SCHEMA)
    schema["properties"]["train"]["properties"]["variants"]["properties"]["layernorm"] = {
        "type": "object", "additionalProperties": False, "properties": {"lr": {"$ref": "#/$defs/learning_rates"}}}
    return schema


def test_a_family_added_outside_the_package_configures_expands_applies_and_trains(built, tmp_path, layernorm_family):
    config = tiny_config()
    config["train"]["variants"] = {"frozen": {}, "layernorm": {"lr": 3e-3}}
    config = validate(config, layernorm_family)
    variants = expand_variants(config["train"], config["model"])
    assert list(variants) == ["frozen", "layernorm"] and variants["layernorm"].family == "layernorm"
    features = write_toy_features(tmp_path, {"train": 96, "val": 48, "test": 32})
    summary = run(built, variants["layernorm"], tmp_path / "run", features=features, epochs=5, latency_batches=1)
    d, layers = 32, 2
    norms, head = (2 * layers + 1) * 2 * d, 2 * d * 16 + 16 + 16 + 1  # two norms per layer and the final one; the toy head
    assert summary["trainable_parameters"] == norms + head
    assert summary["val_auc"] > 0.8 and set(summary["latency_ms"]) == {"base", "unmerged"}
    assert families.what_trains({"family": "layernorm"}) == "encoder layer norms + head"


ADALORA = {"type": "adalora", "init_r": 8, "target_r": 2, "tinit": 0, "tfinal": 4, "deltaT": 1, "lr": 5e-3}


def adalora_variant():
    config = tiny_config(train__variants={"peft-adalora": ADALORA})
    return expand_variants(config["train"])["peft-adalora"]


def test_adaloras_total_step_is_the_runs_own():
    with pytest.raises(ConfigError, match=r"train\.variants\.peft-adalora\.total_step: set by gwlora \(the run's length\)"):
        tiny_config(train__variants={"peft-adalora": {**ADALORA, "total_step": 100}})


def test_adaloras_hook_reallocates_the_ranks_down_to_its_target_budget(built):
    """After each optimiser step the hook calls peft's allocator: the ranks fall from init_r to target_r per module on average."""
    from gwlora.model import build_classifier
    from gwlora.precision import FP32
    from gwlora.train import train_step

    variant, steps = adalora_variant(), 12
    torch.manual_seed(0)
    model = families.apply_variant(build_classifier(built["root"] / "base_model", 2, 100, built["config"]["model"]), variant)
    hook = families.family(variant.family).step_hook(model, variant, steps)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    x, y = torch.randn(8, 2, 80, 100), (torch.arange(8) % 2).float()
    for step in range(1, steps + 1):
        train_step(model, optimizer, torch.nn.BCEWithLogitsLoss(), x, y, FP32)
        hook.after_step(step)
    pattern = model.peft_config["default"].rank_pattern
    assert len(pattern) == 2 * 2 and sum(map(sum, pattern.values())) == 2 * len(pattern)  # q_proj and v_proj of both layers
    kept = {n: int((p != 0).sum()) for n, p in model.named_parameters() if "lora_E" in n}
    assert sum(kept.values()) == 2 * len(pattern) and len(set(kept.values())) > 1, kept  # reallocated, not cut evenly
    with pytest.raises(Exception, match=r"tinit \(0\) and tfinal \(4\) leave no step of rank allocation in the run's 4 steps"):
        families.family(variant.family).step_hook(model, variant, 4)


def best_adapter(best_dir) -> tuple[dict, dict[str, torch.Tensor]]:
    """A best checkpoint's rank pattern (from its adapter_config.json) and AdaLoRA tensors."""
    pattern = json.loads((best_dir / "adapter_config.json").read_text())["rank_pattern"]
    return pattern, {k: v for k, v in load_file(best_dir / "adapter_model.safetensors").items() if "lora_" in k}


def test_a_killed_adalora_run_resumes_to_the_same_allocation(tmp_path, built, caplog):
    """The allocator's scores travel with the run state: resumed at step 8, the run allocates and ends as the whole one."""
    variant = Variant(**{**adalora_variant().to_dict(), "lr": 2e-2})
    features = write_toy_features(tmp_path, {"train": 48, "val": 32, "test": 32})  # separable: the best checkpoint comes late
    settings = dict(features=features, epochs=3, eval_every_steps=4)  # 18 steps, evaluations mid-epoch
    whole = run(built, variant, tmp_path / "whole", **settings)
    assert whole["best_step"] > 8, whole["best_step"]  # so the compared checkpoint was allocated after the interruption
    interrupted(built, variant, tmp_path / "killed", 8, **settings)
    assert (tmp_path / "killed" / RUN_STATE).exists()
    with caplog.at_level("INFO", logger="gwlora"):
        resumed = run(built, variant, tmp_path / "killed", **settings)
    assert "resuming from its saved state at step 8" in caplog.text
    a, b = (pd.read_csv(tmp_path / d / "curve.csv").drop(columns="train_time_s") for d in ("whole", "killed"))
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-6)
    for key in ("best_step", "best_val_loss", "test_auc", "test_loss"):
        assert resumed[key] == pytest.approx(whole[key], rel=1e-6), key
    (pattern, tensors), (whole_pattern, whole_tensors) = (best_adapter(tmp_path / d / BEST_DIR) for d in ("killed", "whole"))
    assert pattern == whole_pattern and sum(map(sum, pattern.values())) < 8 * len(pattern)  # reallocated below init_r
    for name, tensor in tensors.items():
        np.testing.assert_allclose(tensor.numpy(), whole_tensors[name].numpy(), rtol=1e-5, atol=1e-7)
