"""Do fp32 and bf16 give the same answers? Paired test-AUC differences of two results folders, run by run (issue 20 item 3).

    python benchmarks/precision_agreement.py train --configfile config/tiny-en.yaml --seeds 0 1 2
    python benchmarks/precision_agreement.py results/tiny-en-precision/fp32 results/tiny-en-precision/bf16 --baseline full

``train`` retrains each variant of a finished study at its selected lr (the study's
tables/summary.csv), once per precision and seed, with the study's own features, base
model and settings, through the train stage's command (``python -m gwlora.train``, one
thread a job, ``--workers`` jobs at a time). Runs go to
``results/<experiment>-precision/<precision>/runs/<run>/seed<s>/``; finished ones are kept.

The comparison pairs each run (``runs/<run>/seed<s>/predictions.csv``) found in both
folders, seed with seed, on its test windows: delta = AUC(first) - AUC(second), averaged
over the seeds both have, with the interval of :func:`gwlora.compare.pooled_auc_difference`
(the label-stratified bootstrap over the windows, widened by the seeds' spread at
Student's t). The precisions agree on a run when the 95% interval covers 0. With one
seed a side that interval holds the test windows' sampling only, so two runs whose
training parted early (a different early-stopping epoch) differ by more than it although
neither precision is at fault: several seeds a side put the spread of retraining into the
interval. ``--baseline full`` adds each run's verdict against full fine-tuning in both
folders. A run id names the variant and, where a variant has an lr grid, its lr.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))  # the checkout's own package, installed or not

from gwlora.cli import StageError  # noqa: E402
from gwlora.compare import check_predictions, differences_table, pooled_auc_difference  # noqa: E402
from gwlora.config import load_and_validate  # noqa: E402
from gwlora.constants import SPLITS  # noqa: E402
from gwlora.errors import ConfigError  # noqa: E402
from gwlora.records import PREDICTIONS_FILE, read_predictions  # noqa: E402
from gwlora.run_state import train_stage_settings  # noqa: E402

SCHEMA = HERE.parent / "workflow" / "schemas" / "config.schema.yaml"
PRECISIONS = ("fp32", "bf16")


def selected_runs(results: Path) -> dict[str, dict]:
    """Run id -> the summary.json of a run at each trained variant's selected lr (tables/summary.csv of a finished study)."""
    table = results / "tables" / "summary.csv"
    if not table.is_file():
        raise StageError(f"{table} does not exist: run the study first (snakemake --cores all --configfile ...)")
    summary = pd.read_csv(table)
    summaries = [json.loads(f.read_text()) for f in sorted((results / "runs").glob("**/seed*/summary.json"))]
    found = {}
    for row in summary[summary["lr"].notna()].itertuples():
        match = [s for s in summaries if s["variant"] == row.variant and math.isclose(s["lr"], row.lr, rel_tol=1e-3)]
        if not match:
            raise StageError(f"{results}/runs: no run of {row.variant} at its selected lr {row.lr:g}")
        found[match[0]["run"]] = match[0]
    return found


def training_jobs(
    configfile: Path, seeds: list[int], precisions: list[str], out: Path | None, variants: list[str] | None = None
) -> list[tuple[list[str], Path, float]]:
    """(train command, run folder, expected seconds) of every run not yet finished, seed by seed, longest first;
    `variants`: only these (default: every trained variant of the study)."""
    config = load_and_validate(configfile, SCHEMA)
    results = Path("results") / config["experiment"]
    out = out or results.parent / f"{config['experiment']}-precision"
    train, selected = train_stage_settings(config["train"]), selected_runs(results)
    jobs = []
    for seed in seeds:
        batch = []
        for precision in precisions:
            for run, s in selected.items():
                if variants and s["variant"] not in variants:
                    continue
                run_dir = out / precision / "runs" / run / f"seed{seed}"
                if (run_dir / "summary.json").is_file():
                    continue
                command = [
                    sys.executable, "-m", "gwlora.train", "--model", str(results / "base_model"),
                    *[arg for split in SPLITS for arg in (f"--{split}-features", str(results / "features" / split))],
                    "--model-config", json.dumps(s["model_config"]), "--variant", json.dumps(s["variant_config"]),
                    "--train-config", json.dumps({**train, "precision": precision}), "--seed", str(seed), "--threads", "1",
                    "--out", str(run_dir), "--log", str(out / "logs" / precision / run / f"seed{seed}.log"),
                ]
                # the study's time of the run; fp32 about 3x that of bf16 on a processor with bf16 units
                batch.append((command, run_dir, s["train_time_s"] * (3 if precision != s["precision"] else 1)))
        jobs += sorted(batch, key=lambda job: -job[2])
    return jobs


def train_all(jobs: list[tuple[list[str], Path, float]], workers: int) -> int:
    """Run the jobs, `workers` at a time; the number that failed (each named, its log beside the others)."""
    def one(job):
        command, run_dir, _ = job
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        status = "done" if done.returncode == 0 else f"FAILED: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
        print(f"{run_dir}: {status}", flush=True)
        return done.returncode == 0

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(not ok for ok in pool.map(one, jobs))


def predictions_of(results: Path) -> dict[tuple[str, int], pd.DataFrame]:
    """(run id, seed) -> predictions of every run under `results`/runs, each file read once; a run id is the run's folder
    below runs/ (``lora-r8``, or ``lora-r8/lr0.0003`` where the variant has an lr grid); shifted sets' predictions are
    not runs."""
    runs = results / "runs"
    found = {(p.parent.parent.relative_to(runs).as_posix(), int(p.parent.name.removeprefix("seed"))): read_predictions(p)
             for p in sorted(runs.glob(f"**/seed*/{PREDICTIONS_FILE}"))}
    if not found:
        raise StageError(f"{results}: no runs/<run>/seed<s>/{PREDICTIONS_FILE}")
    return found


def agreement(first: dict, second: dict, n_resamples: int = 2000, names: tuple[str, str] = ("first", "second")) -> list[dict]:
    """One row per run present in both :func:`predictions_of` (named `names`), over the seeds both have: the mean
    paired difference, its 95% interval and whether it covers 0.

    With several seeds a side the windows' interval is widened by the seeds' spread
    (:func:`gwlora.compare.pooled_auc_difference`): it holds the spread of retraining, which with one seed a side it
    cannot. ``per_seed`` lists each seed's difference on all windows; ``sd_first`` and ``sd_second`` the test AUC's
    standard deviation over each side's seeds (NaN with one)."""
    common = [key for key in first if key in second]
    if not common:
        raise StageError(f"{names[0]} and {names[1]} share no run (run ids: {sorted({k[0] for k in first})} vs {sorted({k[0] for k in second})})")
    rows = []
    for run in dict.fromkeys(run for run, _ in common):
        seeds = [seed for r, seed in common if r == run]
        # gwlora.compare's own check: every run of both sides scores the same windows with the same labels
        labels, logits = check_predictions({(f"{run} ({name})", seed): side[run, seed] for name, side in zip(names, (first, second)) for seed in seeds})
        a, b = ([logits[f"{run} ({name})", seed] for seed in seeds] for name in names)
        d = pooled_auc_difference(labels, a, b, n_resamples=n_resamples)
        aucs = np.array([[roc_auc_score(labels, x), roc_auc_score(labels, y)] for x, y in zip(a, b)])
        spread = aucs.std(axis=0, ddof=1) if len(seeds) > 1 else [float("nan")] * 2
        rows.append({
            "run": run, "seeds": seeds, **d,
            "per_seed": (aucs[:, 0] - aucs[:, 1]).tolist(), "sd_first": float(spread[0]), "sd_second": float(spread[1]),
            "covers_0": bool(d["ci_low"] <= 0 <= d["ci_high"]),
        })
    return rows


def verdicts(predictions: dict, baseline: str, name: str, n_resamples: int = 2000) -> pd.DataFrame:
    """Each run of :func:`predictions_of` (of folder `name`) against the run of variant `baseline` (its run id's first
    part), pooled over their shared seeds: gwlora.compare's differences table, one row per run (delta, ci_low,
    ci_high, n_seeds, verdict)."""
    base = sorted({run for run, _ in predictions if run.split("/")[0] == baseline})
    if len(base) != 1:
        raise StageError(f"{name}: {'no run' if not base else 'several runs'} of the baseline {baseline!r} ({base})")
    pairs = [(run, base[0]) for run in dict.fromkeys(run for run, _ in predictions) if run != base[0]]
    table = differences_table(predictions, pairs, n_resamples=n_resamples)
    return table[table.seed.astype(str) == "pooled"].set_index("variant")


def same_verdicts(first: dict, second: dict, baseline: str, names: tuple[str, str], n_resamples: int = 2000) -> str:
    """A markdown table: each run's verdict against `baseline` in both folders' predictions, and whether they are the same."""
    a, b = (verdicts(side, baseline, name, n_resamples) for side, name in zip((first, second), names))
    lines = [f"| run | against {baseline}, {names[0]} | {names[1]} | same verdict? |", "|:--|:--|:--|:--|"]
    for run in [r for r in a.index if r in b.index]:
        cells = [f"{t.loc[run, 'verdict']}, {t.loc[run, 'delta']:+.4f} [{t.loc[run, 'ci_low']:+.4f}, {t.loc[run, 'ci_high']:+.4f}]"
                 f" ({t.loc[run, 'n_seeds']} seed{'s' if t.loc[run, 'n_seeds'] != 1 else ''})" for t in (a, b)]
        lines.append(f"| {run} | {cells[0]} | {cells[1]} | {'yes' if a.loc[run, 'verdict'] == b.loc[run, 'verdict'] else 'NO'} |")
    return "\n".join(lines)


def markdown(rows: list[dict], first: str, second: str) -> str:
    lines = [f"| run | seeds | delta AUC ({first} - {second}) | 95% CI | covers 0? | per seed | test AUC sd over seeds, {first} / {second} |",
             "|:--|:--|--:|:--|:--|:--|:--|"]
    for r in rows:
        per_seed = ", ".join(f"{x:+.4f}" for x in r["per_seed"])
        lines.append(f"| {r['run']} | {', '.join(map(str, r['seeds']))} | {r['delta']:+.4f} | [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | "
                     f"{'yes' if r['covers_0'] else 'NO'} | {per_seed} | {r['sd_first']:.4f} / {r['sd_second']:.4f} |")
    return "\n".join(lines)


def train_main(argv) -> int:
    p = argparse.ArgumentParser(prog="precision_agreement.py train", description="retrain a study's selected runs in each precision")
    p.add_argument("--configfile", type=Path, required=True, help="the study's config, e.g. config/tiny-en.yaml (its results must exist)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per precision")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--workers", type=int, default=2, help="training jobs at a time, one thread each")
    p.add_argument("--variants", nargs="+", help="only these variants (default: all the study trained)")
    p.add_argument("--out", type=Path, help="default: results/<experiment>-precision")
    args = p.parse_args(argv)
    try:
        jobs = training_jobs(args.configfile, args.seeds, args.precisions, args.out, args.variants)
    except (StageError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(jobs)} runs to train, about {sum(j[2] for j in jobs) / 3600 / args.workers:.1f} h with {args.workers} workers", flush=True)
    failed = train_all(jobs, args.workers)
    return 1 if failed else 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        return train_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("first", type=Path, help="results folder, e.g. results/demo-fp32")
    p.add_argument("second", type=Path, help="results folder, e.g. results/demo-bf16")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--baseline", help="also each run's verdict against this variant's run (e.g. full), in both folders")
    args = p.parse_args(argv)
    try:
        first, second, names = predictions_of(args.first), predictions_of(args.second), (args.first.name, args.second.name)
        rows = agreement(first, second, args.resamples, names)
        table = same_verdicts(first, second, args.baseline, names, args.resamples) if args.baseline else None
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(markdown(rows, args.first.name, args.second.name))
    if table:
        print(f"\n{table}")
    covered = sum(r["covers_0"] for r in rows)
    print(f"\n{covered} of {len(rows)} runs: the 95% interval covers 0")
    return 0 if covered == len(rows) else 2


if __name__ == "__main__":
    raise SystemExit(main())
