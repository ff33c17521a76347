"""Learning-rate grids that extend at their edges (``train.lr_search``), decided on validation records alone.

A variant's grid is the list of rates under ``train.variants.<key>.lr``. When the
rate :func:`gwlora.compare.select_lr` selects (by ``train.lr_selection``, on the
runs' validation records) is the smallest or the largest of those tried, a rate
beyond may do better: with ``lr_search.extend`` on, the workflow trains one more
rate past that edge (every seed), decides again, and repeats until the selected
rate is interior or ``max_extensions`` rates were added at that edge.

* The step is the grid's own ratio at that edge, the geometric step of its two
  nearest rates (grid 1e-5, 3e-5, 1e-4 extends to 3.33e-6, 1.11e-6 below and
  3.33e-4, 1.11e-3 above), each rate rounded to :data:`EXTENSION_DIGITS`
  significant digits so that its run name (``<variant>/lr<rate>``) stays short.
  Every candidate is known before any run, so the workflow can constrain its
  wildcards and look each run's variant up like any other.
* A one-rate grid has no ratio: the config check refuses ``extend`` for it
  (:func:`check_grids`) rather than guess a factor.
* The decision reads only the runs' validation columns (``best_val_loss``,
  ``val_auc``) of ``summary.json``: :func:`validation_records` keeps nothing
  else, and :func:`select_lr` refuses any other column.

The workflow runs :func:`rates_to_train` in a Snakemake checkpoint, one round per
added rate (``workflow/rules/lr_search.smk``): ``snakemake -n`` shows the first
round and that more may follow, and a rerun after a kill resumes from the rounds
already decided.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import pandas as pd

from .cli import StageError, read_json, run_stage, write_json
from .compare import select_lr
from .errors import ConfigError
from .records import SUMMARY_FILE
from .variants import Variant

log = logging.getLogger("gwlora.lr_search")

EXTENSION_DIGITS = 3  # significant digits of an added rate (its run name prints it with :g)
EDGES = ("lower", "upper")


def _rounded(rate: float) -> float:
    return float(f"{rate:.{EXTENSION_DIGITS}g}")


def extension_rates(grid: list[float], max_extensions: int) -> dict[str, list[float]]:
    """The rates an extension may add past each edge of `grid`, nearest first: ``{"lower": [...], "upper": [...]}``."""
    rates = sorted(grid)
    if len(rates) < 2:
        raise ConfigError(f"invalid config: an lr grid of one rate ({rates}) has no ratio to extend by; list two or more")
    down, up = rates[1] / rates[0], rates[-1] / rates[-2]
    return {"lower": [_rounded(rates[0] / down**k) for k in range(1, max_extensions + 1)],
            "upper": [_rounded(rates[-1] * up**k) for k in range(1, max_extensions + 1)]}


def validation_records(records: list[dict], variant: str) -> pd.DataFrame:
    """The validation table select_lr reads, from summary.json records: variant, lr, seed, val_loss, val_auc only."""
    try:
        rows = [(variant, float(r["lr"]), int(r["seed"]), r["best_val_loss"], r["val_auc"]) for r in records]
    except KeyError as exc:
        raise StageError(f"lr search of {variant}: a run's record lacks {exc.args[0]!r}") from None
    return pd.DataFrame(rows, columns=["variant", "lr", "seed", "val_loss", "val_auc"]).astype({"val_loss": float, "val_auc": float})


def decide(records: list[dict], variant: str, grid: list[float], max_extensions: int, metric: str) -> dict:
    """One round of the search: the selected rate, its edge, and the rates still to train (none, or one past that edge).

    `records` are the summary.json records of every run trained so far (every seed of every rate tried: the grid
    and the rates earlier rounds added); only their validation columns are read.
    """
    chosen = select_lr(validation_records(records, variant), metric).iloc[0]
    tried = sorted({float(r["lr"]) for r in records})
    missing = sorted(set(map(float, grid)) - set(tried))
    if missing:
        raise StageError(f"lr search of {variant}: no runs at grid rates {missing}")
    edge = chosen.grid_edge
    candidates = extension_rates(grid, max_extensions)[edge] if edge else []
    untried = [rate for rate in candidates if rate not in tried]
    train = untried[:1]  # select_lr's edge is of the rates tried: past it lies the nearest untried candidate
    if edge and not train:
        log.warning("%s: lr %g selected at the %s edge after %d added rate(s), the most lr_search.max_extensions allows",
                    variant, chosen.lr, edge, max_extensions)
    return {"variant": variant, "metric": metric, "selected_lr": float(chosen.lr), "grid_edge": edge, "value": float(chosen.value),
            "tried": tried, "train": train}


def rates_to_train(records: list[dict], variant: str, grid: list[float], max_extensions: int, metric: str) -> list[float]:
    """The rates still to train for `variant` given its runs so far: [] when its selected rate is interior or the edge is spent."""
    return decide(records, variant, grid, max_extensions, metric)["train"]


def grids(variants: dict[str, Variant]) -> dict[str, list[float]]:
    """Each compared variant's name -> its lr grid, in the order of `variants` (from gwlora.config.expand_variants)."""
    out: dict[str, list[float]] = {}
    for variant in variants.values():
        out.setdefault(variant.name, []).append(variant.lr)
    return out


def check_grids(variants: dict[str, Variant]) -> None:
    """With lr_search.extend on, every variant needs a grid of two or more rates: one rate has no ratio to step by."""
    single = [f"{name} (lr {lrs[0]:g})" for name, lrs in grids(variants).items() if len(lrs) < 2]
    if single:
        raise ConfigError(f"invalid config: train.lr_search.extend needs an lr grid of two or more rates for every variant; "
                          f"{', '.join(single)} list one")


def extension_variants(variants: dict[str, Variant], max_extensions: int) -> dict[str, Variant]:
    """Every run an extension may add, keyed by run id (``<variant>/lr<rate>``, as the grid's own runs)."""
    first = {}
    for variant in variants.values():
        first.setdefault(variant.name, variant)
    out = {}
    for name, grid in grids(variants).items():
        for rate in (r for rates in extension_rates(grid, max_extensions).values() for r in rates):
            run = f"{name}/lr{rate:g}"
            if run in variants:
                raise ConfigError(f"invalid config: lr search of {name} would add {run}, which its grid already runs; "
                                  "list rates a geometric step apart")
            out[run] = dataclasses.replace(first[name], lr=rate, run=run)
    return out


def plan_digest(config: dict) -> str:
    """A digest of what the tables are made from (variants, seeds, lr searches, shifted test sets), for the name of the
    marker the aggregate rule leaves beside its tables.

    Snakemake (9.x, since snakemake#4124) leaves a job whose outputs exist and whose input waits on an undecided
    checkpoint out of its plan: a finished study given more variants (config/tiny-en-part1.yaml, then
    config/tiny-en.yaml) said "Nothing to be done" and kept its old tables. A marker named by this digest is missing
    whenever the plan changed, and a missing output makes the aggregate job, and the runs it waits on, run.
    """
    plan = {"variants": config["train"]["variants"], "seeds": config["train"]["seeds"],
            "lr_search": config["train"].get("lr_search"), "test_sets": config["evaluation"]["test_sets"]}
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:12]


def _parser(p):
    p.add_argument("--variant", required=True, help="the compared variant (its name, without /lr...)")
    p.add_argument("--grid", required=True, type=float, nargs="+", help="its configured lr grid")
    p.add_argument("--runs", required=True, nargs="+", help="run directories so far, each with summary.json")
    p.add_argument("--max-extensions", required=True, type=int, help="rates that may be added past each edge")
    p.add_argument("--metric", required=True, help="train.lr_selection: val_loss or val_auc")
    p.add_argument("--out", required=True, help="the round's decision (JSON): the rates still to train")


def _run(args):
    """Decide one round of a variant's lr search from its runs' validation records."""
    records = [read_json(Path(run) / SUMMARY_FILE) for run in args.runs]
    decision = decide(records, args.variant, args.grid, args.max_extensions, args.metric)
    log.info("%s: lr %g selected of %s%s; to train: %s", args.variant, decision["selected_lr"], decision["tried"],
             f" at the {decision['grid_edge']} edge" if decision["grid_edge"] else "", decision["train"] or "nothing")
    write_json(args.out, decision)


def main(argv=None) -> int:
    return run_stage("lr-search", _parser, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
