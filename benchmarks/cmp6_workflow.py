"""Comparison 6: workflow overhead: the demo DAG's wall time, and a no-op re-run.

The workflow's files are copied to a scratch directory (as a user's clone has
them) and ``snakemake --cores all --configfile config/demo.yaml`` runs there
twice: the first builds everything, the second must find everything up to date
and finish in under 10 s. With --smoke only a dry run (DAG construction and
config validation) is timed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import Result, Setup, judged

REPO = Path(__file__).resolve().parents[1]
NOOP_TARGET_S = 10.0


def workflow_copy(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "environment.yml"):
        shutil.copy2(REPO / name, root)
    for name in ("workflow", "config", "report", "src"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"), dirs_exist_ok=True)
    return root


def snakemake(cwd: Path, *args: str) -> float:
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "all", "--configfile", "config/demo.yaml", *args],
                          cwd=cwd, capture_output=True, text=True, env=env, check=False)
    took = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"snakemake {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return took


def run(setup: Setup) -> list[Result]:
    root = workflow_copy(setup.work / "workflow")
    if setup.smoke:
        dag = None
        noop = snakemake(root, "--dry-run")
        what = "dry run (smoke: the DAG is not built)"
    else:
        dag = snakemake(root)
        noop = snakemake(root)
        what = "no-op re-run"
    target, met = judged(noop, NOOP_TARGET_S, at_least=False)
    return [Result(
        6, f"workflow overhead: demo DAG, then {what}", "demo DAG, first run", what, "seconds (absolute)",
        dag, noop, "s", noop, target.replace("<=", "<"), met,
        notes=[] if dag is None else [f"whole demo DAG: {dag:.0f} s wall time"], extra={"dag_s": dag, "noop_s": noop},
    )]
