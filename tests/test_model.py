import pytest
import torch

from gwlora.cli import StageError
from gwlora.variants import Variant
from gwlora.families import apply_variant
from gwlora.constants import WHISPER_FULL_FRAMES, WHISPER_N_MELS
from gwlora.model import build_classifier, count_parameters

MODEL_CONFIG = {"context": "clip", "pooling": "mean", "head_hidden": [16]}
D, LAYERS, CHANNELS = 32, 2, 2


def head_params(width=CHANNELS * D, hidden=16):
    return width * hidden + hidden + hidden + 1


def classifier(built, **overrides):
    torch.manual_seed(0)
    return build_classifier(built["root"] / "base_model", CHANNELS, 100, {**MODEL_CONFIG, **overrides})


def lora(rank, targets=("q_proj", "v_proj"), **params):
    return Variant(name=f"lora-r{rank}", family="lora", lr=1e-3, params={
        "rank": rank, "alpha": float(rank), "target_modules": list(targets), "dropout": 0.0, "rslora": False, "dora": False, **params})


def test_frozen_trains_the_head_only(built):
    model = apply_variant(classifier(built), Variant(name="frozen", family="frozen", lr=1e-3))
    assert count_parameters(model)[0] == head_params()
    assert not any(p.requires_grad for p in model.encoder.parameters())


@pytest.mark.parametrize("rank", [1, 4, 8])
def test_lora_trainable_count_is_analytic(built, rank):
    model = apply_variant(classifier(built), lora(rank))
    # r (d_in + d_out) per adapted matrix, 2 matrices (q, v) per layer, plus the head
    assert count_parameters(model)[0] == LAYERS * 2 * rank * (D + D) + head_params()


def test_partial_trains_top_layers_and_head(built):
    base = classifier(built)
    per_layer = sum(p.numel() for p in base.encoder.layers[-1].parameters())
    norm = sum(p.numel() for p in base.encoder.layer_norm.parameters())
    model = apply_variant(base, Variant(name="partial-top1", family="partial", lr=1e-3, params={"layers": 1}))
    assert count_parameters(model)[0] == per_layer + norm + head_params()
    assert not any(p.requires_grad for p in model.encoder.layers[0].parameters())


def test_full_trains_everything_but_fixed_positions(built):
    model = apply_variant(classifier(built), Variant(name="full", family="full", lr=1e-3))
    trainable, total = count_parameters(model)
    assert trainable == total - model.encoder.embed_positions.weight.numel()


def test_encoder_is_shared_across_channels(built):
    model = classifier(built).eval()
    x = torch.randn(3, CHANNELS, 80, 100)
    with torch.no_grad():
        pooled = [model.encoder(input_features=x[:, c]).last_hidden_state.mean(1) for c in range(CHANNELS)]
        expected = model.head(torch.cat(pooled, dim=-1)).squeeze(-1)
        assert torch.allclose(model(x), expected, atol=1e-6)


def test_30s_context_pads_like_whisper_silence(built):
    model = classifier(built, context="30s", pooling="last").eval()
    x = torch.randn(2, CHANNELS, 80, 100)
    padded = model.pad_to_context(x.flatten(0, 1))
    assert padded.shape[-1] == WHISPER_FULL_FRAMES
    floor = x.flatten(0, 1).amax(dim=(-2, -1)) - 2.0
    assert torch.equal(padded[..., 100:], floor[:, None, None].expand(-1, WHISPER_N_MELS, WHISPER_FULL_FRAMES - 100))
    with torch.no_grad():
        assert model(x).shape == (2,)


def test_merged_lora_gives_the_same_logits(built):
    model = apply_variant(classifier(built), lora(4)).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # B starts at zero: make the update non-trivial
        x = torch.randn(2, CHANNELS, 80, 100)
        unmerged = model(x)
        merged = model.merge_and_unload()(x)
    assert not torch.allclose(unmerged, classifier(built).eval()(x), atol=1e-4)
    assert torch.allclose(unmerged, merged, atol=1e-5)


def test_unknown_target_module_is_named(built):
    with pytest.raises(StageError, match="k_projj"):
        apply_variant(classifier(built), lora(2, targets=("k_projj",)))


def test_rank_above_width_is_rejected(built):
    with pytest.raises(StageError, match="rank 64 exceeds the layer width 32"):
        apply_variant(classifier(built), lora(64))


def test_all_linear_lora_count_is_analytic(built):
    model = apply_variant(classifier(built), lora(2, targets=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")))
    ffn = 64
    per_layer = 4 * 2 * (D + D) + 2 * (D + ffn) + 2 * (ffn + D)
    assert count_parameters(model)[0] == LAYERS * per_layer + head_params()


def test_rslora_scales_by_alpha_over_sqrt_r_and_dora_adds_magnitudes(built):
    rs = apply_variant(classifier(built), lora(4, rslora=True, alpha=8.0))
    q = rs.base_model.model.encoder.layers[0].self_attn.q_proj
    assert q.scaling["default"] == pytest.approx(8.0 / 4**0.5)
    plain = apply_variant(classifier(built), lora(4, alpha=8.0))
    assert plain.base_model.model.encoder.layers[0].self_attn.q_proj.scaling["default"] == pytest.approx(8.0 / 4)
    dora = apply_variant(classifier(built), lora(4, dora=True))
    # DoRA learns one magnitude per output feature of each adapted matrix, on top of LoRA's A and B
    assert count_parameters(dora)[0] == LAYERS * 2 * (4 * (D + D) + D) + head_params()


@pytest.mark.parametrize("context, frames", [("clip", 100), ("1s", 100), ("2s", 200), ("2.5s", 250), ("30s", WHISPER_FULL_FRAMES)])
def test_a_context_duration_pads_to_its_frames_and_slices_the_positions_to_match(built, context, frames):
    model = classifier(built, context=context, pooling="last").eval()
    assert model.input_frames == frames
    assert model.encoder.embed_positions.num_embeddings == frames // 2 == model.encoder.config.max_source_positions
    full = classifier(built, context="30s").encoder.embed_positions.weight
    assert torch.equal(model.encoder.embed_positions.weight, full[: frames // 2])  # Whisper's own first positions
    x = torch.randn(2, CHANNELS, 80, 100)
    padded = model.pad_to_context(x.flatten(0, 1))
    assert padded.shape[-1] == frames and torch.equal(padded[..., :100], x.flatten(0, 1))
    floor = x.flatten(0, 1).amax(dim=(-2, -1)) - 2.0  # Whisper's silence, as for 30 s
    assert torch.equal(padded[..., 100:], floor[:, None, None].expand(-1, WHISPER_N_MELS, frames - 100))
    with torch.no_grad():
        assert model(x).shape == (2,)


def test_a_context_shorter_than_the_clip_is_refused(built):
    with pytest.raises(StageError, match="model.context '0.5s'"):
        classifier(built, context="0.5s")


@pytest.mark.parametrize("dtype, kernel", [(torch.bfloat16, "eager"), (torch.float32, "sdpa")])
def test_attention_takes_the_kernel_measured_fastest_for_its_call(built, monkeypatch, dtype, kernel):
    """bf16 on a CPU at clip length goes through the eager matmuls (4-5x faster there), fp32 through SDPA, same numbers."""
    import gwlora.model as model_module

    called = []
    for name in ("eager", "sdpa"):
        real = getattr(model_module, f"{name}_attention_forward")
        monkeypatch.setattr(model_module, f"{name}_attention_forward",
                            lambda *a, _real=real, _name=name, **k: (called.append(_name), _real(*a, **k))[1])
    x = torch.randn(3, CHANNELS, 80, 100)
    chosen = classifier(built).eval()
    reference = build_classifier(built["root"] / "base_model", CHANNELS, 100, MODEL_CONFIG, attn_implementation="sdpa").eval()
    reference.load_state_dict(chosen.state_dict())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        ours, theirs = chosen(x).float(), reference(x).float()
    assert called and set(called) == {kernel}  # the reference's SDPA is transformers' own, not counted
    torch.testing.assert_close(ours, theirs, atol=0.05 if dtype == torch.bfloat16 else 1e-5, rtol=0.05 if dtype == torch.bfloat16 else 1e-5)
