"""Do fp32 and bf16 give the same answers? Paired test-AUC differences of two results folders, run by run (issue 20 item 3).

    python benchmarks/precision_agreement.py results/demo-fp32 results/demo-bf16

Each run (``runs/<run>/seed<s>/predictions.csv``) found in both folders is paired on
its test windows: delta = AUC(first) - AUC(second), with the paired, label-stratified
bootstrap interval of :func:`gwlora.compare.paired_auc_difference`. The two runs agree
when the 95% interval covers 0. A run id names the variant and, where a variant has an
lr grid, its lr: compare the runs of each variant's selected lr (the demo has one lr per
variant, so every run is its variant's selected one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))  # the checkout's own package, installed or not

from gwlora.cli import StageError  # noqa: E402
from gwlora.compare import paired_auc_difference  # noqa: E402
from gwlora.records import PREDICTIONS_FILE, read_predictions  # noqa: E402


def runs_of(results: Path) -> dict[tuple[str, str], Path]:
    """(run id, seed folder) -> predictions.csv of every run under `results`/runs; a run id is the run's folder below
    runs/ (``lora-r8``, or ``lora-r8/lr0.0003`` where the variant has an lr grid); shifted sets' predictions are not runs."""
    runs = results / "runs"
    found = {(p.parent.parent.relative_to(runs).as_posix(), p.parent.name): p for p in sorted(runs.glob(f"**/seed*/{PREDICTIONS_FILE}"))}
    if not found:
        raise StageError(f"{results}: no runs/<run>/seed<s>/{PREDICTIONS_FILE}")
    return found


def paired_windows(a: Path, b: Path):
    """Labels and the two runs' logits on the same test windows (checked: same windows, same labels)."""
    first, second = read_predictions(a), read_predictions(b)
    if list(first["window"]) != list(second["window"]) or list(first["label"]) != list(second["label"]):
        raise StageError(f"{a} and {b} score different test windows or labels: not a paired comparison")
    return first["label"].to_numpy(), first["logit"].to_numpy(), second["logit"].to_numpy()


def agreement(first: Path, second: Path, n_resamples: int = 2000) -> list[dict]:
    """One row per run present in both folders: delta, its 95% interval and whether it covers 0."""
    a, b = runs_of(first), runs_of(second)
    common = [key for key in a if key in b]
    if not common:
        raise StageError(f"{first} and {second} share no run (run ids: {sorted(k[0] for k in a)} vs {sorted(k[0] for k in b)})")
    rows = []
    for run, seed in common:
        d = paired_auc_difference(*paired_windows(a[run, seed], b[run, seed]), n_resamples=n_resamples)
        rows.append({"run": run, "seed": seed, **d, "covers_0": bool(d["ci_low"] <= 0 <= d["ci_high"])})
    return rows


def markdown(rows: list[dict], first: str, second: str) -> str:
    lines = [f"| run | seed | delta AUC ({first} - {second}) | 95% CI | covers 0? |", "|:--|:--|--:|:--|:--|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['seed']} | {r['delta']:+.4f} | [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | "
                     f"{'yes' if r['covers_0'] else 'NO'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("first", type=Path, help="results folder, e.g. results/demo-fp32")
    p.add_argument("second", type=Path, help="results folder, e.g. results/demo-bf16")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    args = p.parse_args(argv)
    try:
        rows = agreement(args.first, args.second, args.resamples)
    except StageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(markdown(rows, args.first.name, args.second.name))
    covered = sum(r["covers_0"] for r in rows)
    print(f"\n{covered} of {len(rows)} runs: the 95% interval covers 0")
    return 0 if covered == len(rows) else 2


if __name__ == "__main__":
    raise SystemExit(main())
