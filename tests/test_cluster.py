"""Where users run the workflow: the default and SLURM profiles, a fake SLURM cluster, the output cache."""

import os
import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from test_workflow import snakemake, workflow_copy

FAKE_SLURM = REPO / "tests" / "fake_slurm"
SLURM_PROFILE = ["--workflow-profile", "profiles/slurm"]


def job_blocks(out: str) -> dict[str, list[str]]:
    """Dry-run output: rule name -> the `resources:` line of each of its jobs."""
    blocks: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head:
            resources = re.search(r"^\s+resources: (.*)$", block, re.M)
            blocks.setdefault(head.group(1), []).append(resources.group(1) if resources else "")
    return blocks


def small_config(root: Path, name: str = "small.yaml", device: str | None = None, **top) -> str:
    """The demo, shrunk to seconds a job: the same rules and DAG, two variants (on `device` when given)."""
    config = yaml.safe_load((root / "config" / "demo.yaml").read_text())
    if device:
        config["train"]["device"] = device
    config["data"]["splits"] = {"train": 48, "val": 32, "test": 32}
    config["model"]["random_init"].update(d_model=32, encoder_ffn_dim=64)
    config["model"]["head_hidden"] = [16]
    config["train"].update(epochs=1, batch_size=8, eval_every_steps=0, early_stopping_patience=0, latency_batches=2)
    config["train"]["variants"] = {"frozen": {"lr": 1e-3}, "lora": {"ranks": [2], "lr": 5e-4}}
    config.update(top)
    (root / name).write_text(yaml.safe_dump(config))
    return name


def test_dry_run_with_the_default_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("GWLORA_GPU_COUNT", "0")  # the plan is the same on a machine with or without GPUs
    done = snakemake(workflow_copy(tmp_path), "-n", "--cores", "2")
    assert "Using workflow specific profile profiles/default" in done.stderr + done.stdout
    jobs = job_blocks(done.stdout)
    # train.device auto: every training job asks for one GPU; the profile's cap (gpu: 1) decides how many run at once
    assert jobs["train"] and all("gpu=1" in r for r in jobs["train"])


def test_cpu_training_asks_for_no_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("GWLORA_GPU_COUNT", "2")  # train.device cpu (the demo) on a machine with GPUs
    out = snakemake(workflow_copy(tmp_path), "-n", "--cores", "2", "--configfile", "config/demo.yaml").stdout
    assert all("gpu=0" in r for r in job_blocks(out)["train"])


@pytest.mark.parametrize("configfile, rules", [(None, {"download", "base_model", "deck"}), ("config/demo.yaml", {"base_model", "deck"})])
def test_dry_run_with_the_slurm_profile(tmp_path, configfile, rules, monkeypatch):
    monkeypatch.setenv("GWLORA_GPU_COUNT", "0")  # a login node without a GPU
    args = ["-n", *SLURM_PROFILE] + (["--configfile", configfile] if configfile else [])
    done = snakemake(workflow_copy(tmp_path), *args)
    assert "profiles/default" not in done.stderr + done.stdout  # the SLURM profile replaces it
    jobs = job_blocks(done.stdout)
    assert set(jobs) >= rules
    for rule in ("dataset", "features", "train", "aggregate", "plot"):
        for resources in jobs[rule]:
            assert "slurm_partition=<your-partition>" in resources and "slurm_account=<your-account>" in resources
            assert re.search(r"runtime=\d+", resources) and re.search(r"mem_mb=\d+", resources)
    assert all("gpu=1" in r for r in jobs["train"])
    assert not any("gpu=" in r for rule in ("dataset", "features") for r in jobs[rule])


def test_only_download_base_model_and_deck_are_local_rules():
    """Compute nodes often have no internet: the rules that download (and the deck) run where Snakemake runs, and so
    does the lr search's checkpoint, which reads a few JSON files and should not wait in a cluster queue."""
    local = {path.stem for path in (REPO / "workflow" / "rules").glob("*.smk") if "localrule: True" in path.read_text()}
    assert local == {"download", "base_model", "deck", "lr_search"}


def fake_cluster_env(tmp_path: Path) -> dict:
    state = tmp_path / "slurm"
    state.mkdir()
    for tool in FAKE_SLURM.iterdir():
        tool.chmod(0o755)
    return {
        "FAKE_SLURM_DIR": str(state),
        "PATH": os.pathsep.join([str(FAKE_SLURM), str(Path(sys.executable).parent), os.environ["PATH"]]),
        "GWLORA_GPU_COUNT": "0",  # the login node has no GPU; the profile asks for one anyway
        "FAKE_SLURM_WAIT": "1",  # sbatch returns when the job has ended: no idle status polling
    }


def sbatch_calls(state: Path) -> list[list[str]]:
    return [shlex.split(p.read_text()) for p in sorted((state / "sbatch").glob("*.args"))]


def option(argv: list[str], name: str) -> str | None:
    """The value of `name` in an sbatch argv (`-t 10`, `--mem 4096` or `--gpus=1`)."""
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


@pytest.mark.slow
def test_demo_runs_through_the_slurm_executor_on_a_fake_cluster(tmp_path, monkeypatch):
    root = workflow_copy(tmp_path)
    # what a user does first: fill in the two placeholders
    profile = (root / "profiles" / "slurm" / "config.yaml").read_text()
    assert "<your-partition>" in profile and "<your-account>" in profile
    profile = profile.replace("<your-partition>", "testpartition").replace("<your-account>", "testaccount")
    (root / "profiles" / "slurm" / "config.yaml").write_text(profile)
    env = fake_cluster_env(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = small_config(root, device="auto")  # a cluster job that asks for a GPU (the demo itself trains on the CPU)
    # the only change for the test: ask for job states after 1 s rather than the plugin's 40 s
    snakemake(root, *SLURM_PROFILE, "--configfile", config, "--slurm-init-seconds-before-status-checks", "1")

    results = root / "results" / "demo"
    assert (results / "slides" / "index.html").exists() and (results / "tables" / "summary.csv").exists()
    calls = sbatch_calls(Path(env["FAKE_SLURM_DIR"]))
    by_rule: dict[str, list[list[str]]] = {}
    for argv in calls:
        by_rule.setdefault(re.match(r"rule_([a-z_]+?)(?:_wildcards_.*)?$", option(argv, "--comment")).group(1), []).append(argv)
    # download, base_model and deck are local rules: never submitted
    assert sorted(by_rule) == ["aggregate", "dataset", "encoder_outputs", "evaluate", "features", "plot", "train"]
    # three splits and the demo's shifted test set; one evaluate job scores both runs on it; the frozen run trains
    # from its encoder's outputs on the train and val splits, computed once each
    assert len(by_rule["train"]) == 2 and len(by_rule["dataset"]) == len(by_rule["features"]) == 4 and len(by_rule["evaluate"]) == 1
    assert len(by_rule["encoder_outputs"]) == 2
    for rule, argvs in by_rule.items():
        for argv in argvs:
            assert option(argv, "-p") == "testpartition" and option(argv, "-A") == "testaccount"
            assert int(option(argv, "-t")) >= 10 and int(option(argv, "--mem")) >= 2048
            # training, the frozen encoder's outputs it trains from, and scoring on the device type the runs trained on
            # (their test numbers are reproduced exactly)
            assert option(argv, "--gpus") == ("1" if rule in ("train", "encoder_outputs", "evaluate") else None), argv
            assert "--parsable" in argv and option(argv, "--output").startswith(str(root / "logs" / "slurm"))
    # the job saw the GPU SLURM gave it, and gwlora.gpus kept it
    logs = list((root / "logs" / "slurm" / "rule_train").rglob("*.log"))
    assert len(logs) == 2 and all("using the scheduler's GPU(s): CUDA_VISIBLE_DEVICES=0" in p.read_text() for p in logs)
    # each submitted job ran its rule in a job step
    assert len(list((Path(env["FAKE_SLURM_DIR"]) / "srun").glob("*.args"))) == len(calls)


@pytest.mark.slow
def test_a_second_experiment_takes_data_and_features_from_the_output_cache(tmp_path, monkeypatch):
    root = workflow_copy(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("SNAKEMAKE_OUTPUT_CACHE", str(cache))
    for experiment in ("first", "second"):
        config = small_config(root, f"{experiment}.yaml", experiment=experiment)
        targets = [f"results/{experiment}/features/{split}" for split in ("train", "val", "test")]
        done = snakemake(root, *targets, "--cores", "2", "--configfile", config, "--cache")  # --cache takes the rest
    # one entry per split and stage: the splits do not share a cache entry
    assert len(list(cache.iterdir())) == 6
    log = done.stdout + done.stderr
    second = root / "results" / "second"
    for stage in ("data", "features"):
        for split in ("train", "val", "test"):
            entries = [p for p in (second / stage / split).iterdir() if not p.name.startswith(".")]
            assert entries and all(p.is_symlink() and Path(os.readlink(p)).parent.parent == cache for p in entries)
            assert f"Symlinking output file results/second/{stage}/{split}/{entries[0].name} from cache." in log
    # the stages themselves did not run: their logs are empty
    assert all(p.stat().st_size == 0 for p in (second / "logs").glob("[df]*/*.log"))
    assert (second / "logs" / "features" / "train.log").exists()
    first = root / "results" / "first" / "features" / "train" / "features.npy"
    assert first.resolve() == (second / "features" / "train" / "features.npy").resolve()
