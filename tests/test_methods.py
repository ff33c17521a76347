"""The adaptation methods beside LoRA: BitFit, bottleneck adapters, prompt tuning and peft methods by configuration."""

import numpy as np
import pandas as pd
import pytest
import torch
from peft import PeftModel

from conftest import tiny_config, write_toy_features
from gwlora.config import ConfigError, Variant, expand_variants
from gwlora.methods import SECONDS_PER_POSITION, disabled, sequence_cost
from gwlora.families import apply_variant
from gwlora.model import build_classifier, count_parameters
from gwlora.scoring import BEST_DIR, load_best
from gwlora.train import train_run

MODEL_CONFIG = {"context": "clip", "pooling": "mean", "head_hidden": [16]}
D, FFN, LAYERS, CHANNELS = 32, 64, 2, 2
HEAD = CHANNELS * D * 16 + 16 + 16 + 1
IA3 = {"type": "IA3", "target_modules": ["k_proj", "v_proj", "fc2"], "feedforward_modules": ["fc2"]}


def classifier(built, seed=0, **overrides):
    torch.manual_seed(seed)
    return build_classifier(built["root"] / "base_model", CHANNELS, 100, {**MODEL_CONFIG, **overrides})


def variants(**families) -> dict[str, Variant]:
    """The variants of `families` (train.variants entries), expanded by a validated tiny config."""
    config = tiny_config(train__variants=families)
    return expand_variants(config["train"])


def bitfit():
    return Variant(name="bitfit", family="bitfit", config_key="bitfit", lr=1e-3)


def adapter(b, style="houlsby"):
    return Variant(name=f"adapter-b{b}", family="adapter", config_key="adapter", lr=1e-3, params={"bottleneck": b, "adapter_style": style})


def prompt(n):
    return Variant(name=f"prompt-l{n}", family="prompt", config_key="prompt", lr=1e-3, params={"prompt_length": n})


def test_bitfit_trains_the_encoder_biases_and_the_head(built):
    model = apply_variant(classifier(built), bitfit())
    # per layer: q, v, out_proj (k_proj has none), fc1, fc2 and two layer norms; then conv1, conv2 and the final norm
    assert count_parameters(model)[0] == LAYERS * (3 * D + FFN + D + 2 * D) + 3 * D + HEAD
    assert all(n.endswith("bias") for n, p in model.encoder.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("style, sites", [("houlsby", 2), ("pfeiffer", 1)])
@pytest.mark.parametrize("b", [1, 8])
def test_adapter_count_is_analytic_and_training_starts_at_the_pretrained_model(built, style, sites, b):
    model = apply_variant(classifier(built), adapter(b, style)).eval()
    assert count_parameters(model)[0] == LAYERS * sites * (2 * D * b + b + D) + HEAD
    x = torch.randn(2, CHANNELS, 80, 100)
    with torch.no_grad():
        assert torch.equal(model(x), classifier(built).eval()(x))  # the up-projection starts at zero


def test_houlsby_adapters_follow_attention_and_feed_forward(built):
    model = apply_variant(classifier(built), adapter(4))
    adapted = sorted(n.rsplit(".adapter.", 1)[0] for n, _ in model.named_parameters() if ".adapter.down.weight" in n)
    assert adapted == [f"encoder.layers.{i}.{site}" for i in range(LAYERS) for site in ("fc2", "self_attn.out_proj")]


@pytest.mark.parametrize("context, pooling", [("clip", "mean"), ("30s", "last")])
@pytest.mark.parametrize("n", [4, 16])
def test_prompt_count_and_sequence(built, context, pooling, n):
    model = apply_variant(classifier(built, context=context, pooling=pooling), prompt(n)).eval()
    assert count_parameters(model)[0] == n * D + HEAD
    x = torch.randn(2, CHANNELS, 80, 100)
    seen = []
    hook = model.encoder.layers[1].register_forward_hook(lambda m, i, out: seen.append(out.shape[1]))
    with torch.no_grad():
        hidden = model.encoder(input_features=model.pad_to_context(x.flatten(0, 1))).last_hidden_state
        logits = model(x)
    hook.remove()
    positions = model.encoder.embed_positions.num_embeddings
    cost = sequence_cost(prompt(n), context, model.clip_positions, positions)
    assert seen[0] == cost["positions"] and hidden.shape[1] == cost["audio_positions"]  # the prompts are dropped before pooling
    if context == "30s":
        assert cost["positions"] == 1500 and cost["audio_seconds_lost"] == pytest.approx(n * SECONDS_PER_POSITION)
    else:
        assert cost["positions"] == 50 + n and cost["audio_seconds_lost"] == 0
    with torch.no_grad(), disabled(model):
        assert not torch.allclose(model(x), logits)  # the prompts change the logits; switched off, the base model runs
        assert model.encoder(input_features=model.pad_to_context(x.flatten(0, 1))).last_hidden_state.shape[1] == positions


def test_ia3_by_configuration_count_is_analytic(built):
    variant = variants(**{"peft-ia3": IA3})["peft-ia3"]
    assert variant.family == "peft" and variant.params["peft_type"] == "IA3"
    model = apply_variant(classifier(built), variant)
    # one scale per output feature of k and v, one per input feature of fc2 (a feed-forward module)
    assert count_parameters(model)[0] == LAYERS * (D + D + FFN) + HEAD


def test_families_expand_to_variants_with_their_own_learning_rates():
    out = variants(bitfit={"lr": [1e-3, 3e-3]}, adapter={"bottleneck": [8, 16], "style": "pfeiffer", "lr": 1e-3},
                   prompt={"length": [4, 16]}, **{"peft-vera": {"type": "vera", "r": 8, "lr": 2e-3}})
    assert list(out) == ["bitfit/lr0.001", "bitfit/lr0.003", "adapter-b8", "adapter-b16", "prompt-l4", "prompt-l16", "peft-vera"]
    assert out["adapter-b16"].params == {"bottleneck": 16, "adapter_style": "pfeiffer"}
    assert out["peft-vera"].params == {"peft_type": "VERA", "peft_config": {"r": 8, "target_modules": ["q_proj", "v_proj"]}}
    assert out["peft-vera"].lr == 2e-3 and Variant.from_dict(out["peft-vera"].to_dict()) == out["peft-vera"]


@pytest.mark.parametrize(
    "families, message",
    [
        ({"peft-x": {"type": "IA3", "target_modules": ["k_proj"], "feedforward_modules": [], "rank": 4}}, r"unknown key train\.variants\.peft-x\.rank for peft's IA3Config"),
        ({"peft-x": {"type": "NOPE"}}, r"train\.variants\.peft-x\.type: unknown peft type 'NOPE'"),
        ({"peft-x": {"type": "PROMPT_TUNING"}}, r"train\.variants\.peft-x\.type: PROMPT_TUNING is a prompt-learning method"),
        ({"peft-x": {"type": "PREFIX_TUNING"}}, r"train\.variants\.peft-x\.type: PREFIX_TUNING is a prompt-learning method"),
        ({"peft-x": {"type": "IA3"}}, r"train\.variants\.peft-x: peft cannot apply IA3 to the encoder's linear layers .*feedforward_modules"),
        ({"peft-x": {"type": "LOHA", "target_modules": ["q_projj"]}}, r"train\.variants\.peft-x: peft cannot apply LOHA .*q_projj"),
        ({"peft-x": {"type": "VERA", "modules_to_save": ["encoder"]}}, r"train\.variants\.peft-x\.modules_to_save: set by gwlora"),
        ({"peft-x": {"r": 4}}, r"train\.variants\.peft-x: 'type' is a required property"),
        ({"adapter": {"bottleneck": [64]}}, r"train\.variants\.adapter\.bottleneck: 64 exceeds the layer width d_model 32"),
        ({"adapter": {"bottleneck": [0]}}, r"train\.variants\.adapter\.bottleneck\.0"),
        ({"adapter": {"bottleneck": [8], "style": "lora"}}, r"train\.variants\.adapter\.style"),
        ({"adapter": {"size": [8]}}, r"train\.variants\.adapter"),
        ({"prompt": {"length": []}}, r"train\.variants\.prompt\.length must not be empty"),
        ({"bitfit": {"biases": "all"}}, r"unknown key train\.variants\.bitfit\.biases"),
    ],
    ids=["peft-unknown-key", "peft-unknown-type", "prompt-tuning", "prefix-tuning", "ia3-no-feedforward", "loha-bad-target",
         "peft-reserved-key", "peft-no-type", "bottleneck-too-wide", "bottleneck-zero", "adapter-style", "adapter-unknown-key",
         "prompt-empty", "bitfit-unknown-key"],
)
def test_bad_family_configs_stop_at_validation_naming_the_key(families, message):
    with pytest.raises(ConfigError, match=message):
        variants(**families)


def test_prompts_must_leave_room_for_the_clip_in_30s_context():
    config = tiny_config()
    with pytest.raises(ConfigError, match=r"train\.variants\.prompt\.length: 1460 prompt positions"):
        tiny_config(model={**config["model"], "context": "30s"}, train__variants={"prompt": {"length": [4, 1460]}})


# --------------------------------------------------------------------------- training, checkpoints, latency

TRAINED = {
    "bitfit": (bitfit(), 1e-2),
    "adapter": (adapter(8), 3e-3),
    "prompt": (prompt(4), 3e-3),
    "peft-ia3": (None, 1e-2),
}


@pytest.mark.parametrize("family", list(TRAINED))
def test_each_family_learns_the_toy_set_and_its_checkpoint_reloads_to_identical_scores(built, tmp_path, family):
    """A bright band in class 1's log-mel: every method reaches a val AUC clearly above chance; the best checkpoint reloads on the CPU."""
    variant, lr = TRAINED[family]
    if variant is None:
        variant = variants(**{family: {**IA3, "lr": lr}})[family]
    variant = Variant(**{**variant.to_dict(), "lr": lr})
    features = write_toy_features(tmp_path, {"train": 96, "val": 48, "test": 32})
    config = built["config"]
    summary = train_run(
        features=features, model_dir=built["root"] / "base_model", model_config=config["model"],
        train_config={**config["train"], "epochs": 5, "latency_batches": 2}, variant=variant, seed=0, out_dir=tmp_path / "run",
    )
    assert summary["val_auc"] > 0.8, summary["val_auc"]
    assert summary["latency_batch"] == 16 and set(summary["latency_ms_batch1"]) == set(summary["latency_ms"]) >= {"base", "unmerged"}
    assert ("merged" in summary["latency_ms"]) == (family == "peft-ia3")  # peft merges IA3; adapters and prompts cannot merge
    assert summary["sequence"]["prompt_positions"] == (4 if family == "prompt" else 0)

    x = torch.from_numpy(np.load(features["test"] / "features.npy"))
    saved = pd.read_csv(tmp_path / "run" / "predictions.csv").logit.to_numpy()
    torch.manual_seed(123)  # another head (and adapter) init: the checkpoint must bring its own
    fresh = apply_variant(build_classifier(built["root"] / "base_model", 2, 100, config["model"]), variant)
    load_best(fresh, variant, tmp_path / "run" / BEST_DIR)
    with torch.no_grad():
        np.testing.assert_allclose(fresh.eval()(x).numpy(), saved, rtol=1e-5, atol=1e-5)
    if family == "peft-ia3":  # a plain peft adapter directory: PeftModel reloads it, and merged it scores the same
        reloaded = PeftModel.from_pretrained(build_classifier(built["root"] / "base_model", 2, 100, config["model"]), str(tmp_path / "run" / BEST_DIR)).eval()
        with torch.no_grad():
            np.testing.assert_allclose(reloaded(x).numpy(), saved, rtol=1e-5, atol=1e-5)
            reloaded.merge_adapter()  # as the latency is timed (peft 0.21's IA3 merge_and_unload fails on a Sequential in modules_to_save)
            np.testing.assert_allclose(reloaded(x).numpy(), saved, rtol=1e-4, atol=1e-4)
