"""Cluster resources estimated from the config (gwlora.resources): sizes that grow with the work."""

import copy
import json

import numpy as np
import pytest
import yaml

from conftest import REPO, SCHEMA
from gwlora import resources as r
from gwlora.config import expand_variants, validate
from gwlora.encoder import clip_frames, encoder_shape


def config(name: str) -> dict:
    """A shipped config, validated; a local encoder directory becomes its hub id, so no test needs ../shared."""
    loaded = yaml.safe_load((REPO / "config" / name).read_text())
    if "whisper-tiny.en" in str(loaded["model"]["pretrained"]):
        loaded["model"]["pretrained"] = "openai/whisper-tiny.en"
    return validate(loaded, copy.deepcopy(SCHEMA))


def test_encoder_size_from_random_init_a_local_copy_or_a_hub_name(tmp_path):
    demo = config("demo.yaml")["model"]
    assert encoder_shape(demo) == encoder_shape(demo, assume_hub_size=True) == (64, 2, 256, 80)
    assert r.encoder_parameters({"pretrained": "openai/whisper-small"}) == pytest.approx(88e6, rel=0.02)
    assert r.encoder_parameters({"pretrained": "openai/whisper-tiny.en"}) == pytest.approx(7.6e6, rel=0.02)
    (tmp_path / "config.json").write_text(json.dumps({"d_model": 384, "encoder_layers": 4, "encoder_ffn_dim": 1536}))
    assert encoder_shape({"pretrained": str(tmp_path)}) == (384, 4, 1536, 80)
    assert encoder_shape({"pretrained": "openai/whisper-base"}) is None  # validation: a hub encoder is checked once loaded
    assert encoder_shape({"pretrained": "openai/whisper-base"}, assume_hub_size=True) == (512, 6, 2048, 80)
    unknown = encoder_shape({"pretrained": "someone/unknown-model"}, assume_hub_size=True)
    assert unknown == encoder_shape({"pretrained": "openai/whisper-small"}, assume_hub_size=True) == (768, 12, 3072, 80)


@pytest.mark.parametrize("seconds", [1.1, 0.58, 2.0])
def test_the_estimates_count_the_frames_the_features_stage_makes(built, seconds):
    """1.1 s is 110.00000000000001 frames in floating point: the estimate rounds, as the clip's samples do."""
    from gwlora.features import clip_extractor, extract

    samples = round(seconds * 16000)
    made = extract(np.zeros((1, 1, samples), dtype=np.float32), clip_extractor(built["root"] / "base_model", samples)).shape[-1]
    assert clip_frames(seconds) == made


def test_full_study_asks_for_more_than_the_demo_and_both_are_sane():
    full, demo = config("config.yaml"), config("demo.yaml")
    assert r.train_runtime(full) > 4 * r.train_runtime(demo)
    assert 60 <= r.train_runtime(full) <= 24 * 60  # the seed's 20 epochs of Whisper small at 30 s context: hours on one GPU
    assert r.train_runtime(demo) <= 15  # the overhead: start-up, loading, latency
    assert r.train_mem_mb(full) > r.train_mem_mb(demo) >= r.MIN_MEM_MB
    for split in ("train", "val", "test"):
        assert r.dataset_mem_mb(full, split) > r.dataset_mem_mb(demo, split)  # GWOSC files
        assert r.features_runtime(full, split) >= r.MIN_RUNTIME_MIN
    assert all(v % r.MEM_STEP_MB == 0 for v in (r.train_mem_mb(full), r.dataset_mem_mb(demo, "val"), r.features_mem_mb(demo, "test")))


def test_cost_grows_with_data_model_epochs_and_context():
    base = config("tiny-en.yaml")
    base["train"].update(epochs=200, device="auto")
    t0 = r.train_runtime(base)

    def changed(section, key, value):
        c = copy.deepcopy(base)
        c[section][key] = value
        return c

    assert r.train_runtime(changed("train", "epochs", 400)) > t0
    assert r.train_runtime(changed("model", "context", "30s")) > t0
    assert r.train_runtime(changed("model", "pretrained", "openai/whisper-medium")) > t0
    assert r.train_runtime(changed("data", "splits", {"train": 40000, "val": 4000, "test": 4000})) > t0
    # a CPU is far slower than a GPU, and more threads help
    assert r.train_runtime(changed("train", "device", "cpu")) > t0
    cpu1, cpu8 = changed("train", "device", "cpu"), changed("train", "device", "cpu")
    cpu1["train"]["threads"], cpu8["train"]["threads"] = 1, 8
    assert r.train_runtime(cpu8) < r.train_runtime(cpu1)


def test_a_retry_asks_for_more():
    full = config("config.yaml")
    assert r.train_runtime(full, attempt=2) == 2 * r.train_runtime(full)
    assert r.train_mem_mb(full, attempt=3) == 3 * r.train_mem_mb(full)
    assert r.dataset_runtime(full, "train", attempt=2) == 2 * r.dataset_runtime(full, "train")


def test_train_estimates_follow_the_runs_context():
    base = config("tiny-en.yaml")
    base["train"].update(epochs=200, device="cpu")
    base["model"]["context"] = ["clip", "5s", "30s"]
    clip, five, thirty = (r.train_runtime(base, context=c) for c in ("clip", "5s", "30s"))
    assert clip < five < thirty
    assert r.positions(base["model"], base["data"], "5s") == 250 and r.positions(base["model"], base["data"], "30s") == 1500
    assert r.train_runtime(base) == thirty  # no run named: the longest listed, the safe request
    assert r.train_mem_mb(base, context="clip") < r.train_mem_mb(base, context="30s")
    jobs = [row["job"] for row in r.estimates(base)]
    assert [j for j in jobs if j.startswith("train (")] == [f"train (each variant and seed, context {c})" for c in ("clip", "5s", "30s")]


def test_a_plan_counts_its_training_jobs_and_hours():
    demo = config("demo.yaml")
    plan = r.plan_hours(demo)
    assert (plan["train_jobs"], plan["configurations"], plan["seeds"]) == (9, 9, 1) and plan["gpu_hours"] == 0.0  # demo trains on the CPU
    assert plan["cpu_hours"] > 9 * r.train_runtime(demo) / 60  # training, scoring, data sets and features
    full = config("config.yaml")
    runs = expand_variants(full["train"], full["model"]).values()  # each run's own estimate: frozen's on cached encoder outputs
    assert r.plan_hours(full)["train_jobs"] == 30 and r.plan_hours(full)["gpu_hours"] >= 3 * sum(r.train_runtime(full, variant=v) for v in runs) / 60
    assert r.confirm_plan(demo, confirmed=False).startswith("demo: 9 training jobs (9 training configurations x 1 seed), about ")


def test_a_huge_plan_needs_confirming():
    """A config of thousands of training jobs once started without a word about its size."""
    huge = config("demo.yaml")
    huge["train"]["seeds"] = list(range(r.LARGE_PLAN_TRAIN_JOBS // 9 + 1))
    jobs = 9 * len(huge["train"]["seeds"])
    with pytest.raises(r.StageError, match=rf"^demo: {jobs} training jobs .* CPU hours .*: more than the {r.LARGE_PLAN_TRAIN_JOBS} .* --config confirm_large=1$"):
        r.confirm_plan(huge, confirmed=False)
    assert r.confirm_plan(huge, confirmed=True).startswith(f"demo: {jobs} training jobs")
    small = config("demo.yaml")
    small["train"]["seeds"] = list(range(r.LARGE_PLAN_TRAIN_JOBS // 9))
    r.confirm_plan(small, confirmed=False)  # at the threshold: starts unasked


def test_the_planned_rate_follows_the_precision_a_job_is_sure_to_run_in():
    """bf16 asks for less than fp32 on a CPU and on a GPU; a CPU's auto asks fp32's time, since the planning machine
    cannot see whether the node that runs the job has native bf16."""
    tiny = config("tiny-en.yaml")
    at = {p: r.train_runtime({**tiny, "train": {**tiny["train"], "precision": p}}) for p in ("auto", "fp32", "bf16")}
    assert at["auto"] == at["fp32"] and at["bf16"] < at["fp32"] / 2
    gpu = {**tiny, "train": {**tiny["train"], "device": "cuda"}}
    on_gpu = {p: r.train_runtime({**gpu, "train": {**gpu["train"], "precision": p}}) for p in ("auto", "fp32", "bf16")}
    assert on_gpu["auto"] == on_gpu["bf16"] <= on_gpu["fp32"]
    assert r.flops_per_s({"device": "cpu", "precision": "bf16", "threads": 4}) == 4 * r.CPU_BF16_FLOPS_PER_THREAD
    assert "fp32's rate, since auto decides on the machine that runs the job" in r.planned_rate(tiny["train"])


def test_the_documented_requests_are_what_the_code_asks():
    """config/README.md's table of the shipped configs' requests (train, and the train split's dataset and features)."""
    text = (REPO / "config" / "README.md").read_text()
    for name in ("config.yaml", "demo.yaml", "tiny-en.yaml"):
        c = config(name)
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}`"))
        cells = [cell.strip() for cell in row.strip("|").split("|")[1:]]
        asked = [(r.train_runtime(c), r.train_mem_mb(c)), (r.dataset_runtime(c, "train"), r.dataset_mem_mb(c, "train")),
                 (r.features_runtime(c, "train"), r.features_mem_mb(c, "train"))]
        assert cells == [f"{minutes} min, {mb // 1024} GiB" for minutes, mb in asked], name
