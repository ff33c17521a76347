"""The Snakemake workflow itself: dry runs, lint, bad config, and the whole demo end to end."""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import OUTLINE, REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def workflow_copy(tmp_path: Path) -> Path:
    """The workflow's files in a fresh directory, as a user's clone would have them."""
    root = tmp_path / "wf"
    root.mkdir()
    for name in ("Snakefile", "environment.yml"):
        shutil.copy2(REPO / name, root)
    for name in ("workflow", "profiles", "config", "report", "src"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return root


def unactivated_env() -> dict:
    """This process's environment as a shell that never activated the virtual environment has it."""
    venv = str(Path(sys.executable).parent)
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if d and d != venv)
    return {**{k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}, "PATH": path}


def snakemake(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # as `.venv/bin/snakemake ...` from a plain shell: the rules' `python` must still be this interpreter
    done = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, env=unactivated_env())
    if check and done.returncode:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


@pytest.mark.parametrize("configfile, n_train, n_test_sets", [(None, 10 * 3, 0), ("config/demo.yaml", 9, 1), ("config/gpu.yaml", 12 * 3, 2)])
def test_dry_run(tmp_path, configfile, n_train, n_test_sets):
    args = ["-n", "--cores", "2"] + (["--configfile", configfile] if configfile else [])
    root = workflow_copy(tmp_path)
    if configfile == "config/gpu.yaml":  # its encoder is a local folder, ../shared/models beside the checkout
        (tmp_path / "shared").symlink_to(REPO.parent / "shared")
    out = snakemake(root, *args).stdout
    assert re.search(rf"^train\s+{n_train}$", out, re.M), out
    assert re.search(rf"^evaluate\s+{n_test_sets}$", out, re.M) or (n_test_sets == 0 and not re.search(r"^evaluate\s", out, re.M)), out
    for rule in ("base_model", "dataset", "features", "aggregate", "plot", "deck"):
        assert re.search(rf"^{rule}\s+\d+$", out, re.M), rule


def test_the_plan_does_not_depend_on_the_machine(tmp_path):
    """The same jobs, outputs and resources whether or not Chromium and a GPU (nvidia-smi) are on this machine."""
    root = workflow_copy(tmp_path)
    bare, tools = tmp_path / "bare", tmp_path / "tools"  # the system's commands without / with the two
    bare.mkdir()
    tools.mkdir()
    for command in Path("/usr/bin").iterdir():
        if not command.name.startswith(("chromium", "nvidia-smi", "google-chrome")):
            (bare / command.name).symlink_to(command)
    for name, text in (("chromium", "exit 0"), ("nvidia-smi", "echo 'GPU 0: NVIDIA H200 (UUID: GPU-1)'")):
        (tools / name).write_text(f"#!/bin/sh\n{text}\n")
        (tools / name).chmod(0o755)

    def plan(*path: Path) -> list[str]:
        env = {**os.environ, "PATH": os.pathsep.join(map(str, [*path, Path(sys.executable).parent, bare]))}
        done = subprocess.run([*SNAKEMAKE, "-n", "--cores", "2", "--printshellcmds"], cwd=root, capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        jobs = done.stdout[done.stdout.index("Building DAG of jobs") :]  # after the run's ID, date and host
        # every job's rule, files, resources and command, in any order (Snakemake lists sets unordered)
        return sorted(re.sub(r"\d{2}:\d{2}:\d{2}", "", line) for line in jobs.splitlines() if "reason:" not in line)

    with_tools, without = plan(tools), plan()
    assert not any("slides.pdf" in line for line in without) and any("gpu=1" in line for line in without)
    assert with_tools == without


def test_lint_is_clean(tmp_path):
    done = snakemake(workflow_copy(tmp_path), "--lint", "--configfile", "config/demo.yaml", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Congratulations, your workflow is in a good condition!" in done.stdout + done.stderr


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["train"].update(epocs=3), "unknown key train.epocs"),
        (lambda c: c["train"].update(batch_size="many"), "train.batch_size: 'many' is not of type 'integer'"),
        (lambda c: c["train"]["variants"]["lora"].update(ranks=[]), "train.variants.lora.ranks must not be empty"),
        (lambda c: c["train"].update(variants={}), "train.variants must not be empty"),
    ],
)
def test_bad_config_fails_before_anything_runs(tmp_path, mutate, message):
    root = workflow_copy(tmp_path)
    config = yaml.safe_load((root / "config" / "demo.yaml").read_text())
    mutate(config)
    (root / "bad.yaml").write_text(yaml.safe_dump(config))
    done = snakemake(root, "--cores", "2", "--configfile", "bad.yaml", check=False)
    assert done.returncode != 0
    assert f"bad.yaml: invalid config: {message}" in done.stdout + done.stderr
    assert not (root / "results").exists()


def test_a_huge_plan_says_its_size_and_starts_only_when_confirmed(tmp_path):
    """A config of 10,000 training jobs once started without a word; every run now prints its size before the first job."""
    from gwlora.resources import LARGE_PLAN_TRAIN_JOBS

    root = workflow_copy(tmp_path)
    config = yaml.safe_load((root / "config" / "demo.yaml").read_text())
    config["train"]["seeds"] = list(range(LARGE_PLAN_TRAIN_JOBS // 9 + 1))  # 9 demo variants
    (root / "huge.yaml").write_text(yaml.safe_dump(config))
    done = snakemake(root, "--cores", "2", "--configfile", "huge.yaml", check=False)
    assert done.returncode != 0
    assert re.search(rf"demo: {9 * len(config['train']['seeds'])} training jobs .* CPU hours .* --config confirm_large=1", done.stderr), done.stderr[-3000:]
    assert not (root / "results").exists()
    # confirmed (the key leaves the config before validation): the plan starts, its size said first
    done = snakemake(root, "--cores", "2", "--configfile", "config/demo.yaml", "--touch", "--config", "confirm_large=1")
    assert "gwlora: demo: 9 training jobs (9 training configurations x 1 seed), about " in done.stderr


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    root = workflow_copy(tmp_path)
    snakemake(root, "--cores", "2", "--configfile", "config/demo.yaml")
    summary = snakemake(root, "--cores", "2", "--configfile", "config/demo.yaml", "--summary").stdout
    # every declared output exists
    outputs = [line.split("\t")[0] for line in summary.splitlines()[1:] if line.strip()]
    assert outputs and all((root / p).exists() for p in outputs), summary
    results = root / "results" / "demo"
    for name in ("summary.csv", "summary.md", "runs.csv", "curves.csv"):
        assert (results / "tables" / name).stat().st_size > 0
    for name in ("val_auc_vs_time", "val_loss_vs_time"):
        assert (results / "figures" / f"{name}.png").exists() and (results / "figures" / f"{name}.svg").exists()
    html = (results / "slides" / "index.html").read_text()
    for section in OUTLINE:
        assert f">{section}</h1>" in html, section
    assert json.loads((results / "slides" / "deck.json").read_text())["renderer"] in ("quarto", "pandoc")
    # each job wrote its log where the rule says
    assert (results / "logs" / "train" / "lora-r8" / "seed0.log").read_text().count("val AUC") >= 1
    assert (results / "slides" / "slides.pptx").stat().st_size > 0
    # every run scored on the shifted test set, the deck saying how they fared
    assert all(json.loads(p.read_text())["n_windows"] == 256 for p in results.glob("runs/*/seed0/shift/quiet/metrics.json"))
    scored = {p.parents[3].name for p in results.glob("runs/*/seed0/shift/quiet/metrics.json")}
    finished = {p.parents[1].name for p in results.glob("runs/*/seed0/summary.json")}
    assert scored == finished and len(scored) == 10, (scored, finished)  # the 9 trained variants and the matched filter
    assert ">Beyond the training distribution</h2>" in html and ">LoRA against other adaptation methods</h2>" in html
    # running it again does nothing
    again = snakemake(root, "-n", "--cores", "2", "--configfile", "config/demo.yaml")
    assert "Nothing to be done" in again.stdout + again.stderr
    # the Snakemake report holds every figure and the tables, under their captions
    snakemake(root, "--report", "report.zip", "--configfile", "config/demo.yaml")
    with zipfile.ZipFile(root / "report.zip") as report:
        names = {Path(n).name for n in report.namelist()}
        page = report.read("report/report.html").decode()
    figures = {p.name for p in (results / "figures").glob("*.png")}
    assert len(figures) == 12 and figures | {"summary.csv", "runs.csv", "differences.csv", "auc_by_snr.csv", "latency.csv", "shift.csv",
                                            "efficiency.csv", "index.html"} <= names
    assert "Validation AUC against cumulative training time" in page  # a caption


def write_wav(path: Path, samples, rate: int = 8000) -> None:
    import wave

    import numpy as np

    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


@pytest.mark.slow
def test_workflow_serves_a_single_channel_audio_folder(tmp_path):
    """data.source audiofolder: one channel through features, training and the deck."""
    import numpy as np

    root = workflow_copy(tmp_path)
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 8000
    for cls in ("tone", "noise"):
        (root / "clips" / cls).mkdir(parents=True)
        for i in range(20):
            x = 0.3 * rng.standard_normal(t.size)
            if cls == "tone":
                x += 0.5 * np.sin(2 * np.pi * rng.uniform(300, 900) * t)
            write_wav(root / "clips" / cls / f"{i:02d}.wav", x)
    config = yaml.safe_load((root / "config" / "demo.yaml").read_text())
    config["experiment"] = "audio-test"
    config["data"] = {"source": "audiofolder", "audiofolder": {"path": "clips", "positive_class": "tone"}, "splits": {"train": 28, "val": 6, "test": 6}}
    config["train"]["variants"] = {"frozen": {"lr": 1e-3}, "lora": {"ranks": [2], "lr": 5e-4}}
    config["evaluation"] = {"test_sets": {}}  # the demo's is an SNR shift, which audio data has not
    config["train"]["epochs"] = 1
    (root / "audio.yaml").write_text(yaml.safe_dump(config))
    snakemake(root, "--cores", "2", "--configfile", "audio.yaml")
    results = root / "results" / "audio-test"
    meta = json.loads((results / "features" / "train" / "meta.json").read_text())
    assert meta["channels"] == ["audio"]
    html = (results / "slides" / "index.html").read_text()
    assert "positive class" in html and "tone" in html
