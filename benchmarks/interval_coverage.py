"""How often does a pooled-over-seeds interval cover a true difference of zero? (the study's paired intervals)

    python benchmarks/interval_coverage.py                  # 3 seeds, 400 trials
    python benchmarks/interval_coverage.py --seeds 2 5 --trials 200

Two models whose expected test AUC is equal are "trained" with a few seeds each: every seed
pair differs by a random amount (a retrained run that ended elsewhere: sd ``--spread`` of
the signal's scale, about 0.03 AUC at the default) on top of the test windows' own noise.
Each trial scores 400 shared test windows and asks three intervals of the mean
difference over seeds whether they cover 0:

* ``windows only``: the paired, label-stratified bootstrap over the shared windows
  (the study's pooled interval before the seeds' spread was added);
* ``two-level bootstrap``: the seed pairs resampled with the windows (percentile);
* ``gwlora.compare``: :func:`gwlora.compare.pooled_auc_difference`, the windows'
  interval widened by the seeds' spread at Student's t.

A 95% interval should cover 0 in about 95% of the trials. Prints one row per number of seeds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))  # the checkout's own package, installed or not

from gwlora.compare import _ResampledAUC, pooled_auc_difference  # noqa: E402

WINDOWS = 400


def simulated_seeds(rng, n_seeds: int, spread: float) -> tuple[np.ndarray, list, list]:
    """Labels and two models' scores per seed: equal in expectation, each seed pair apart by a random shift of the signal."""
    labels = np.arange(WINDOWS) % 2
    a, b = [], []
    for _ in range(n_seeds):
        base = labels + rng.normal(size=WINDOWS)
        b.append(base + rng.normal(0, 0.3, WINDOWS))
        a.append(base + rng.normal(0, 0.3, WINDOWS) + rng.normal(0, spread) * labels)
    return labels, a, b


def bootstrap_intervals(rng, labels, a, b, n_resamples: int) -> dict[str, tuple[float, float]]:
    """Percentile 95% intervals of the mean over seeds of AUC(a) - AUC(b): windows resampled, and seeds with them."""
    positive = labels == 1
    n = len(a)
    scores = np.stack([*a, *b])
    auc = _ResampledAUC(scores[:, positive], scores[:, ~positive])
    pos = rng.integers(0, positive.sum(), (n_resamples, positive.sum()))
    neg = rng.integers(0, (~positive).sum(), (n_resamples, (~positive).sum()))
    per_run = auc(pos, neg)  # (resamples, 2 * seeds): a's seeds, then b's
    per_seed = per_run[:, :n] - per_run[:, n:]
    seeds = rng.integers(0, n, (n_resamples, n))
    two_level = np.take_along_axis(per_seed, seeds, axis=1).mean(axis=1)
    return {name: tuple(np.percentile(x, [2.5, 97.5])) for name, x in
            (("windows only", per_seed.mean(axis=1)), ("two-level bootstrap", two_level))}


def coverage(n_seeds: int, trials: int, spread: float, n_resamples: int, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    covered = {"windows only": 0, "two-level bootstrap": 0, "gwlora.compare": 0}
    for trial in range(trials):
        labels, a, b = simulated_seeds(rng, n_seeds, spread)
        intervals = bootstrap_intervals(rng, labels, a, b, n_resamples)
        d = pooled_auc_difference(labels, a, b, n_resamples=n_resamples, seed=trial)
        intervals["gwlora.compare"] = (d["ci_low"], d["ci_high"])
        for name, (low, high) in intervals.items():
            covered[name] += low <= 0 <= high
    return {name: count / trials for name, count in covered.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[3], help="seeds a side (2 or more)")
    p.add_argument("--trials", type=int, default=400)
    p.add_argument("--spread", type=float, default=0.25, help="sd of a seed pair's shift of the signal (0.25: about 0.03 AUC)")
    p.add_argument("--resamples", type=int, default=500)
    args = p.parse_args(argv)
    if min(args.seeds) < 2:
        p.error("--seeds: 2 or more (with one seed there is no seeds' spread to cover)")
    print(f"coverage of a true difference of 0 by 95% intervals, {args.trials} trials, {WINDOWS} test windows")
    print(f"| seeds a side | {' | '.join(['windows only', 'two-level bootstrap', 'gwlora.compare'])} |\n|--:|--:|--:|--:|")
    for n in args.seeds:
        start = time.perf_counter()
        c = coverage(n, args.trials, args.spread, args.resamples)
        print(f"| {n} | {c['windows only']:.3f} | {c['two-level bootstrap']:.3f} | {c['gwlora.compare']:.3f} |"
              f"   ({time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
