import copy
import subprocess
import sys
import re

import pytest
import yaml

from conftest import REPO, SCHEMA, tiny_config
from gwlora.config import ConfigError, Variant, expand_variants, load_and_validate, validate

SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"


def demo() -> dict:
    with open(REPO / "config" / "demo.yaml") as fh:
        return yaml.safe_load(fh)


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml", "tiny-en.yaml", "gpu.yaml"])
def test_shipped_configs_validate(name):
    config = load_and_validate(REPO / "config" / name, SCHEMA_PATH)
    assert config["train"]["variants"]


def check_rejected(config: dict, *needles: str) -> str:
    with pytest.raises(ConfigError) as info:
        validate(config, copy.deepcopy(SCHEMA))
    message = str(info.value)
    for needle in needles:
        assert needle in message
    return message


def test_unknown_key_is_named():
    config = demo()
    config["train"]["epocs"] = 3
    check_rejected(config, "train.epocs", "unknown key")


def test_unknown_top_level_key_is_named():
    config = demo()
    config["trian"] = {}
    check_rejected(config, "trian")


def test_wrong_type_is_named():
    config = demo()
    config["train"]["batch_size"] = "sixteen"
    check_rejected(config, "train.batch_size", "integer")


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["train"].update(variants={}), "train.variants"),
        (lambda c: c["train"]["variants"]["lora"].update(ranks=[]), "train.variants.lora.ranks"),
        (lambda c: c["train"].update(seeds=[]), "train.seeds"),
    ],
)
def test_empty_lists_are_rejected(mutate, key):
    config = demo()
    mutate(config)
    check_rejected(config, key, "must not be empty")


def test_min_greater_than_max_is_rejected():
    config = demo()
    config["data"]["snr"] = {"min": 30, "max": 10}
    check_rejected(config, "data.snr", "min (30) > max (10)")


def test_one_class_split_is_rejected():
    config = demo()
    config["data"]["splits"]["val"] = 2
    config["data"]["signal_fraction"] = 0.1
    check_rejected(config, "data.splits.val", "one class")


def test_partial_deeper_than_encoder_is_rejected():
    config = demo()
    config["train"]["variants"]["partial"]["layers"] = 5
    check_rejected(config, "train.variants.partial.layers", "encoder_layers")


def test_rank_wider_than_layer_is_rejected():
    config = demo()
    config["train"]["variants"]["lora"]["ranks"] = [2, 128]
    check_rejected(config, "train.variants.lora.ranks", "d_model")


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_and_validate(tmp_path / "nope.yaml", SCHEMA_PATH)


def test_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    config = demo()
    config["model"]["pooling"] = "max"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"bad\.yaml: invalid config: model\.pooling"):
        load_and_validate(path, SCHEMA_PATH)


def test_defaults_are_filled():
    config = demo()
    del config["train"]["device"]
    del config["model"]["random_init"]["init_std"]
    validate(config, copy.deepcopy(SCHEMA))
    assert config["train"]["device"] == "auto"
    assert config["model"]["random_init"]["init_std"] == 0.02


def test_variants_expand_to_wildcards_in_display_order():
    config = tiny_config()
    variants = expand_variants(config["train"])
    assert list(variants) == ["full", "frozen", "partial-top1", "lora-r2", "lora-r8", "bitfit", "adapter-b8", "prompt-l4", "peft-ia3"]
    lora = variants["lora-r8"]
    assert {k: lora.params[k] for k in ("rank", "alpha", "target_modules")} == {"rank": 8, "alpha": 2.0, "target_modules": ["q_proj", "v_proj"]}
    assert variants["full"].lr == config["train"]["variants"]["full"]["lr"]


def test_family_lr_falls_back_to_train_lr():
    config = tiny_config()
    del config["train"]["variants"]["frozen"]["lr"]
    assert expand_variants(config["train"])["frozen"].lr == config["train"]["lr"]


def test_fixed_alpha_applies_to_every_rank():
    config = tiny_config()
    config["train"]["variants"]["lora"]["alpha"] = 16
    assert {v.params["alpha"] for v in expand_variants(config["train"]).values() if v.family == "lora"} == {16.0}


@pytest.mark.parametrize(
    "mutate, needles",
    [
        (lambda d: d["injection"].update(approximant="IMRPhenomNope"), ("data.injection.approximant", "IMRPhenomNope")),
        (lambda d: d.update(psd="aLIGOImaginary"), ("data.psd", "aLIGOImaginary")),
        (lambda d: d["injection"].update(masses={"min": 60, "max": 10}), ("data.injection.masses", "min (60) > max (10)")),
        (lambda d: d.update(band={"min": 20, "max": 1500}), ("data.band.max", "Nyquist")),
        (lambda d: d.update(segment_seconds=1.5), ("data.segment_seconds",)),
        (lambda d: d.update(detectors=["H1", "G1"]), ("data.detectors.1", "'G1' is not one of")),
        # a waveform of years from 20 Hz: lalsimulation would exhaust memory or crash the dataset job
        (lambda d: d["injection"].update(masses={"min": 0.001, "max": 50}), ("data.injection", "0.001+0.001", "raise masses.min or f_lower")),
        (lambda d: d["injection"].update(f_lower=0.01), ("data.injection", "f_lower 0.01 Hz")),
        (lambda d: d["injection"].update(f_lower=1500.0), ("data.injection", "Nyquist")),
        (lambda d: d["injection"].update(approximant="SEOBNRv4", masses={"min": 2, "max": 3}), ("data.injection", "SEOBNRv4 cannot make")),
        # the other end: a 10^6 solar-mass binary rings down at about 0.009 Hz, so none of it reaches f_lower (20 Hz)
        (lambda d: d["injection"].update(masses={"min": 1e6, "max": 1e6}),
         ("data.injection", "1e+06+1e+06 solar-mass binary (masses.max) rings down at about 0.00894 Hz", "below f_lower 20 Hz",
          "lower masses.max or f_lower")),
        (lambda d: d["injection"].update(masses={"min": 10, "max": 150}, f_lower=70.0), ("data.injection", "150+150", "below f_lower 70 Hz")),
    ],
)
def test_bad_physics_is_named(mutate, needles):
    config = demo()
    mutate(config["data"])
    check_rejected(config, *needles)


def test_a_heavy_binary_that_still_rings_down_in_band_is_accepted():
    """The bound is the remnant's ringdown, not the inspiral's ISCO: 150+150 solar masses from 20 Hz rings down near 60 Hz."""
    config = demo()
    config["data"]["injection"]["masses"] = {"min": 10, "max": 150}
    validate(config, copy.deepcopy(SCHEMA))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["train"].update(lr=float("nan")), "invalid config: train.lr: nan is not a finite number"),
        (lambda c: c["train"].update(lr=[1e-4, float("nan")]), "invalid config: train.lr.1: nan is not a finite number"),
        (lambda c: c["train"].update(lr=float("inf")), "invalid config: train.lr: inf is not a finite number"),
        (lambda c: c["train"]["variants"]["full"].update(lr=[1e-3, float("inf")]), "invalid config: train.variants.full.lr.1: inf is not a finite number"),
        (lambda c: c["train"].update(weight_decay=float("nan")), "invalid config: train.weight_decay: nan is not a finite number"),
        (lambda c: c["data"].update(snr={"min": 8.0, "max": float("inf")}), "invalid config: data.snr.max: inf is not a finite number"),
        # once a bare "ValueError: cannot convert float NaN to integer"
        (lambda c: c["data"].update(window_seconds=float("nan")), "invalid config: data.window_seconds: nan is not a finite number"),
        (lambda c: c.update(evaluation={"test_sets": {"quiet": {"snr": {"min": float("nan"), "max": 8.0}}}}),
         "invalid config: evaluation.test_sets.quiet.snr.min: nan is not a finite number"),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_key(mutate, message):
    """NaN passes every schema bound (each comparison is false) and inf every lower one; none may start work."""
    config = demo()
    mutate(config)
    assert check_rejected(config) == message


def test_non_finite_numbers_in_a_yaml_file_are_refused(tmp_path):
    config = demo()
    config["train"]["lr"] = float("nan")
    path = tmp_path / "nan.yaml"
    path.write_text(yaml.safe_dump(config))
    assert "lr: .nan" in path.read_text()  # as a user writes it
    with pytest.raises(ConfigError, match=r"nan\.yaml: invalid config: train\.lr: nan is not a finite number"):
        load_and_validate(path, SCHEMA_PATH)


def test_by_design_an_empty_test_set_and_prompts_longer_than_the_clip_are_accepted():
    """Both are documented in config/README.md ("accepted on purpose"); a hardening pass must not refuse them."""
    config = demo()
    config["evaluation"] = {"test_sets": {"same": {}}}  # a fresh draw of the training distribution: a control
    validate(config, copy.deepcopy(SCHEMA))
    assert config["evaluation"]["test_sets"]["same"] == config["data"]
    long_prompts = demo()
    long_prompts["train"]["variants"]["prompt"]["length"] = [64]  # more than the 1 s clip's 50 positions
    validate(long_prompts, copy.deepcopy(SCHEMA))  # at model.context clip they lengthen the sequence


def test_further_lora_families_expand_with_their_own_names():
    config = demo()
    config["train"]["variants"]["lora-all"] = {"ranks": [4], "target_modules": "all-linear"}
    config["train"]["variants"]["lora-rs"] = {"ranks": [2, 8], "scaling": "alpha/sqrt(r)"}
    config["train"]["variants"]["lora-dora"] = {"ranks": [4], "dora": True}
    variants = expand_variants(validate(config, copy.deepcopy(SCHEMA))["train"])
    assert list(variants)[3:9] == ["lora-r2", "lora-r8", "lora-all-r4", "lora-rs-r2", "lora-rs-r8", "lora-dora-r4"]
    assert variants["lora-all-r4"].params["target_modules"] == ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
    assert variants["lora-rs-r8"].params["rslora"] and variants["lora-rs-r8"].params["alpha"] == 2.0 and not variants["lora-r8"].params["rslora"]
    assert variants["lora-dora-r4"].params["dora"] and {v.family for v in variants.values() if v.config_key.startswith("lora")} == {"lora"}


def test_unknown_target_module_fails_validation():
    config = demo()
    config["train"]["variants"]["lora"]["target_modules"] = ["q_proj", "w_q"]
    check_rejected(config, "train.variants.lora.target_modules")


def test_partial_deeper_than_a_local_pretrained_encoder_fails_validation(tmp_path):
    (tmp_path / "config.json").write_text('{"d_model": 384, "encoder_layers": 4}')
    config = demo()
    config["model"] = {"pretrained": str(tmp_path)}
    config["train"]["variants"]["partial"]["layers"] = 6
    check_rejected(config, "train.variants.partial.layers (6)", "4 encoder_layers", str(tmp_path))


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda c: c["train"].update(batch_size=16.0), "train.batch_size"),
        (lambda c: c.update(seed=0.0), "seed"),
        (lambda c: c["model"].update(head_hidden=[128.0, 64]), "model.head_hidden.0"),
        (lambda c: c["train"].update(seeds=[0, 1.0]), "train.seeds.1"),
    ],
)
def test_integer_keys_refuse_floats(mutate, key):
    """16.0 for an integer would fail minutes later in torch with an unrelated message."""
    config = demo()
    mutate(config)
    check_rejected(config, key, "whole number")


@pytest.mark.parametrize("name", ["demo\n", "demo\nx", "demo/..", "../demo", ""])
def test_experiment_names_are_one_plain_line(name):
    config = demo()
    config["experiment"] = name
    check_rejected(config, "experiment")


def test_an_experiment_name_fits_in_a_file_name_with_its_suffixes():
    """A 300-character name once passed and crashed the first job with "OSError: [Errno 36] File name too long"."""
    config = demo()
    config["experiment"] = "x" * 300
    assert check_rejected(config).startswith("invalid config: experiment: 300 characters, more than the 128 allowed")
    longest = demo()
    longest["experiment"] = "x" * 128
    validate(longest, copy.deepcopy(SCHEMA))
    # the longest file name built from it: a shifted test set's GWOSC manifest, while it is written atomically
    assert len(f".manifest-{'x' * 128}.shift-{'t' * 40}.json.tmp-{'a' * 8}".encode()) <= 255


def test_a_sha256_with_a_trailing_newline_is_refused():
    config = demo()
    config["data"] = {"source": "audiofolder", "splits": {"train": 4, "val": 2, "test": 2},
                      "audiofolder": {"path": "x", "positive_class": "a", "sha256": "0" * 64 + "\n"}}
    check_rejected(config, "data.audiofolder.sha256")


@pytest.mark.parametrize("path", ["./models/whisper-small", "/nonexistent/whisper", "~/no-such-whisper-dir"])
def test_a_missing_local_model_directory_is_named_at_validation(path):
    config = demo()
    config["model"] = {"pretrained": path}
    check_rejected(config, "model.pretrained", path, "does not exist", "demo")


def test_a_missing_directory_beside_an_existing_folder_is_a_path_not_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    config = demo()
    config["model"] = {"pretrained": "models/whisper-small"}
    check_rejected(config, "models/whisper-small", "does not exist")
    config["model"] = {"pretrained": "openai/whisper-small"}  # a hub id: checked when it is loaded
    validate(config, copy.deepcopy(SCHEMA))


def test_a_hub_id_without_network_fails_at_once_with_one_line(monkeypatch):
    import time

    from gwlora.base_model import load_pretrained
    from gwlora.cli import StageError

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(StageError) as info:
        load_pretrained("openai/whisper-no-such-model")
    message = str(info.value)
    assert time.monotonic() - start < 10
    assert "openai/whisper-no-such-model" in message and "HF_HUB_OFFLINE" in message and "config/demo.yaml" in message
    assert "\n" not in message


def test_an_unreachable_hub_is_named_without_retries(monkeypatch):
    import socket

    from gwlora.base_model import hub_unreachable_reason

    with socket.socket() as s:  # a port on this machine that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{port}")
    reason = hub_unreachable_reason(timeout=2)
    assert reason and f"127.0.0.1:{port} cannot be reached" in reason


# --------------------------------------------------------------------------- encoder context


@pytest.mark.parametrize(
    "context, needles",
    [
        ("0.5s", ("model.context", "shorter than the clip")),  # demo windows are 1 s
        ("31s", ("model.context", "exceeds Whisper's 30 s")),
        ("2.01s", ("model.context", "multiple of 0.02 s")),
        ("2 s", ("model.context",)),
        ("10", ("model.context",)),
        (["clip", "2s", "2s"], ("model.context",)),  # listed twice
        (["2s", "2.0s"], ("model.context.1 (2.0s) is the duration of model.context.0 (2s) again",)),  # once 18 variants, two alike
        (["clip", "2.50s", "5s", "2.5s"], ("model.context.3 (2.5s)", "model.context.1 (2.50s)", "list each context once")),
        (["clip", "45s"], ("model.context.1", "exceeds")),
        ([], ("model.context",)),
    ],
)
def test_bad_contexts_are_rejected_naming_the_key(context, needles):
    config = demo()
    config["model"]["context"] = context
    check_rejected(config, *needles)


def test_one_context_names_no_variant_and_a_list_is_an_axis():
    from gwlora.config import run_model_config

    single = tiny_config(model={**tiny_config()["model"], "context": "2s"})
    names = list(expand_variants(single["train"]))
    assert names[:5] == ["full", "frozen", "partial-top1", "lora-r2", "lora-r8"] and list(expand_variants(single["train"], single["model"])) == names
    assert "context" not in expand_variants(single["train"], single["model"])["full"].to_dict()  # records made before the axis, unchanged
    alone = tiny_config(model={**tiny_config()["model"], "context": ["5s"]})
    assert alone["model"]["context"] == "5s" and "full" in expand_variants(alone["train"], alone["model"])

    config = tiny_config(model={**tiny_config()["model"], "context": ["clip", "2.5s", "30s"]})
    variants = expand_variants(config["train"], config["model"])
    assert list(variants)[:3] == ["full-ctxclip", "full-ctx2.5s", "full-ctx30s"] and len(variants) == 3 * len(names)
    assert "lora-r8-ctx2.5s" in variants and variants["lora-r8-ctx2.5s"].context == "2.5s"
    for run in variants:  # safe as a folder and a Snakemake wildcard value
        assert re.fullmatch(r"[A-Za-z0-9._-]+", run), run
    assert run_model_config(config["model"], variants["full-ctx30s"])["context"] == "30s"
    assert run_model_config(single["model"], expand_variants(single["train"], single["model"])["full"]) is single["model"]
    assert Variant.from_dict(variants["full-ctx2.5s"].to_dict()) == variants["full-ctx2.5s"]


def test_context_axis_with_an_lr_grid_names_both():
    config = tiny_config(model={**tiny_config()["model"], "context": ["clip", "2s"]})
    config["train"]["variants"]["full"]["lr"] = [1e-4, 1e-3]
    variants = expand_variants(config["train"], config["model"])
    assert {"full-ctxclip/lr0.0001", "full-ctx2s/lr0.001"} <= set(variants)


def test_a_job_step_validates_the_demo_without_importing_peft():
    """A cluster job step re-reads the Snakefile per job: without the peft probe it validates in a fraction of a second."""
    script = (
        "import sys, yaml; from gwlora.config import load_schema, validate; "
        f"validate(yaml.safe_load(open({str(REPO / 'config' / 'demo.yaml')!r})), load_schema({str(SCHEMA_PATH)!r}), probe_libraries=False); "
        "print(sorted(m for m in ('peft', 'torch', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_without_the_library_probe_a_bad_peft_config_is_left_to_the_main_process():
    config = tiny_config()
    config["train"]["variants"] = {"peft-x": {"type": "NOPE", "lr": 1e-3}}
    validate(copy.deepcopy(config), copy.deepcopy(SCHEMA), probe_libraries=False)  # the step trusts its parent's check
    with pytest.raises(ConfigError, match=r"train\.variants\.peft-x\.type: unknown peft type 'NOPE'"):
        validate(config, copy.deepcopy(SCHEMA))
