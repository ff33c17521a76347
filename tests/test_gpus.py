"""Local GPU assignment (gwlora.gpus) with fake device counts: one device per job, freed when the job dies."""

import os
import signal
import subprocess
import sys
import time

import pytest

from gwlora import gpus
from gwlora.cli import StageError

# a stand-in training job: report the device it was given, then hold it until told to stop
HOLDER = "import os, sys; print(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'), flush=True); sys.stdin.read()"


def start_job(tmp_path, count, device="auto", **env):
    environ = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    environ.update({gpus.COUNT_ENV: str(count), gpus.LOCK_DIR_ENV: str(tmp_path / "locks"), **env})
    return subprocess.Popen(
        [sys.executable, "-m", "gwlora.gpus", "--device", device, "--", sys.executable, "-c", HOLDER],
        env=environ, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(proc):
    proc.stdin.close()
    proc.wait(timeout=30)


def test_n_jobs_get_n_distinct_devices_and_a_crashed_job_frees_its_device(tmp_path):
    jobs = [start_job(tmp_path, 3) for _ in range(3)]
    try:
        devices = [job.stdout.readline().strip() for job in jobs]
        assert sorted(devices) == ["0", "1", "2"]
        assert "claimed GPU" in jobs[0].stderr.readline()
        # a fourth job waits for a device ...
        waiting = start_job(tmp_path, 3)
        time.sleep(1.0)
        assert waiting.poll() is None
        # ... and gets the one whose holder is killed (no clean-up code runs on SIGKILL)
        victim = devices.index("1")
        jobs[victim].send_signal(signal.SIGKILL)
        jobs[victim].wait(timeout=10)
        assert waiting.stdout.readline().strip() == "1"
        jobs[victim] = waiting
    finally:
        for job in jobs:
            job.kill()
            job.wait(timeout=10)


def test_scheduler_choice_cpu_and_no_gpu_are_left_alone(tmp_path):
    # SLURM (or the user) already chose: respected as it is
    job = start_job(tmp_path, 4, CUDA_VISIBLE_DEVICES="3")
    assert job.stdout.readline().strip() == "3"
    finish(job)
    for count, device in [(4, "cpu"), (0, "auto"), (0, "cuda"), (4, "cuda:2")]:
        job = start_job(tmp_path, count, device=device)
        assert job.stdout.readline().strip() == "unset", (count, device)
        finish(job)
    assert not any((tmp_path / "locks").glob("gpu*.lock"))


def test_claims_in_one_process_and_release(tmp_path):
    first = gpus.try_claim(2, tmp_path)
    second = gpus.try_claim(2, tmp_path)
    assert (first[0], second[0]) == (0, 1)
    assert gpus.try_claim(2, tmp_path) is None
    os.close(first[1])
    again = gpus.try_claim(2, tmp_path)
    assert again[0] == 0
    os.close(again[1])
    os.close(second[1])


def test_assign_sets_the_environment(tmp_path):
    env = {gpus.COUNT_ENV: "2"}
    fd = gpus.assign("cuda", env, lock_dir=tmp_path)
    try:
        assert env["CUDA_VISIBLE_DEVICES"] == "0"
    finally:
        os.close(fd)
    assert gpus.assign("cpu", {gpus.COUNT_ENV: "2"}, lock_dir=tmp_path) is None


@pytest.mark.parametrize("device, count, expected", [("cpu", 8, 0), ("cuda", 0, 1), ("cuda:1", 0, 1), ("auto", 0, 1), ("auto", 2, 1)])
def test_gpu_resource_of_a_training_job_depends_on_the_config_alone(device, count, expected, monkeypatch):
    monkeypatch.setenv(gpus.COUNT_ENV, str(count))  # the machine's GPUs do not change the plan
    assert gpus.requested(device) == expected


def test_device_count_from_nvidia_smi(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-1)'\necho '  MIG 1g.18gb Device 0: (UUID: MIG-1)'\necho 'GPU 1: NVIDIA H200 (UUID: GPU-2)'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpus.visible_device_count({}) == 2
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert gpus.visible_device_count({}) == 0


def test_bad_input_is_one_readable_line(tmp_path):
    with pytest.raises(StageError, match="GWLORA_GPU_COUNT='two'"):
        gpus.visible_device_count({gpus.COUNT_ENV: "two"})
    done = subprocess.run([sys.executable, "-m", "gwlora.gpus", "--device", "cpu", "--", "no-such-program-here"], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "gwlora-gpus: error: cannot run 'no-such-program-here': No such file or directory"
