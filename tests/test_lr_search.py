"""lr grids that extend at their edges: the rates added, when the search stops, and that it never reads a test number."""

import json
import os
import re

import numpy as np
import pytest
import yaml

from conftest import tiny_config
from gwlora.config import expand_variants
from gwlora.errors import ConfigError
from gwlora.lr_search import decide, extension_rates, extension_variants, main, rates_to_train
from test_workflow import snakemake, workflow_copy

GRID = [1e-4, 3e-4, 1e-3]  # the grid's ratio is 3 at the lower edge, 3.33 at the upper


def records(optimum: float, lrs, seeds=(0, 1), test_auc: float = 0.9) -> list[dict]:
    """summary.json records of every (lr, seed): val loss a parabola in log10(lr) with its lowest point at `optimum`."""
    out = []
    for lr in lrs:
        for seed in seeds:
            loss = 0.2 + 0.1 * (np.log10(lr) - np.log10(optimum)) ** 2 + 0.001 * seed
            out.append({"lr": lr, "seed": seed, "best_val_loss": loss, "val_auc": 1 - loss, "test_auc": test_auc, "test_brier": 0.1})
    return out


def search(optimum: float, grid, max_extensions: int) -> list[float]:
    """The rates the search adds, round by round, as the workflow's checkpoints would (each round trains every seed)."""
    tried, added = list(grid), []
    while rates := rates_to_train(records(optimum, tried), "full", grid, max_extensions, "val_loss"):
        assert len(rates) == 1
        tried += rates
        added += rates
    return added


def test_the_grids_own_ratio_steps_past_each_edge():
    assert extension_rates(GRID, 2) == {"lower": [3.33e-5, 1.11e-5], "upper": [3.33e-3, 1.11e-2]}


def test_an_optimum_past_the_lower_edge_adds_rates_until_it_is_interior():
    assert search(optimum=2e-5, grid=GRID, max_extensions=3) == [3.33e-5, 1.11e-5]  # 1.11e-5 is worse than 3.33e-5: stop


def test_the_search_stops_at_max_extensions():
    assert search(optimum=1e-7, grid=GRID, max_extensions=2) == [3.33e-5, 1.11e-5]
    assert search(optimum=1e-7, grid=GRID, max_extensions=1) == [3.33e-5]


def test_an_optimum_past_the_upper_edge_extends_upwards():
    assert search(optimum=1.5e-3, grid=GRID, max_extensions=2) == [3.33e-3]  # 1e-3 still the best: interior now
    assert search(optimum=5e-3, grid=GRID, max_extensions=2) == [3.33e-3, 1.11e-2]  # 3.33e-3 the best: one more to show it


def test_an_interior_optimum_adds_nothing():
    decision = decide(records(3e-4, GRID), "full", GRID, 2, "val_loss")
    assert decision["train"] == [] and decision["selected_lr"] == 3e-4 and decision["grid_edge"] == ""


def test_the_decision_reads_no_test_column():
    grid_runs = records(2e-5, GRID)
    worse_on_test = [{**r, "test_auc": 0.5 if r["lr"] == 1e-4 else 0.99, "test_brier": 0.9} for r in grid_runs]
    assert decide(grid_runs, "full", GRID, 2, "val_loss") == decide(worse_on_test, "full", GRID, 2, "val_loss")
    no_test_at_all = [{k: v for k, v in r.items() if not k.startswith("test_")} for r in grid_runs]
    assert decide(no_test_at_all, "full", GRID, 2, "val_loss")["train"] == [3.33e-5]


def test_the_selection_metric_is_the_configured_one():
    runs = records(3e-4, GRID)
    for r in runs:  # val AUC best at the largest rate, val loss interior
        r["val_auc"] = r["lr"]
    assert decide(runs, "full", GRID, 2, "val_loss")["train"] == []
    assert decide(runs, "full", GRID, 2, "val_auc")["train"] == [3.33e-3]


def test_extend_refuses_a_one_rate_grid_at_validation():
    with pytest.raises(ConfigError, match=r"train.lr_search.extend needs an lr grid of two or more rates .*frozen \(lr 0.001\)"):
        tiny_config(train__lr_search={"extend": True, "max_extensions": 1})


def test_added_runs_are_named_like_the_grids_runs():
    config = tiny_config(train__variants={"full": {"lr": [1e-4, 3e-4]}}, train__lr_search={"extend": True, "max_extensions": 1})
    variants = expand_variants(config["train"], config["model"])
    added = extension_variants(variants, 1)
    assert list(variants) == ["full/lr0.0001", "full/lr0.0003"]
    assert list(added) == ["full/lr3.33e-05", "full/lr0.0009"]
    assert added["full/lr3.33e-05"].lr == 3.33e-5 and added["full/lr3.33e-05"].name == "full"


def write_runs(root, runs: dict[str, list[dict]]) -> list[str]:
    """Fake finished runs under `root` (run id -> its seeds' summary.json records), with empty curve and predictions files."""
    dirs = []
    for run, seeds in runs.items():
        for record in seeds:
            run_dir = root / run / f"seed{record['seed']}"
            run_dir.mkdir(parents=True)
            (run_dir / "summary.json").write_text(json.dumps(record))
            (run_dir / "curve.csv").touch()
            (run_dir / "predictions.csv").touch()
            dirs.append(str(run_dir))
    return dirs


def by_run(variant: str, optimum: float, grid) -> dict[str, list[dict]]:
    return {f"{variant}/lr{lr:g}": [r for r in records(optimum, grid) if r["lr"] == lr] for lr in grid}


def test_the_stage_writes_the_rates_still_to_train(tmp_path):
    out = tmp_path / "round0.json"
    args = ["--variant", "full", "--grid", *map(repr, GRID), "--runs", *write_runs(tmp_path / "runs", by_run("full", 2e-5, GRID)),
            "--max-extensions", "2", "--metric", "val_loss", "--out", str(out)]
    assert main(args) == 0
    decision = json.loads(out.read_text())
    assert decision["train"] == [3.33e-5] and decision["grid_edge"] == "lower" and decision["tried"] == GRID


FULL, FROZEN = [1e-4, 3e-4], [1e-3, 3e-3, 1e-2]


@pytest.fixture
def search_workflow(tmp_path):
    """A workflow copy with a config whose two variants search their grids: full (2 rates) and frozen (3), 2 seeds."""
    root = workflow_copy(tmp_path)
    config = yaml.safe_load((root / "config" / "demo.yaml").read_text())
    config["experiment"] = "search"
    config["evaluation"]["test_sets"] = {}
    config["train"].update(variants={"full": {"lr": FULL}, "frozen": {"lr": FROZEN}}, seeds=[0, 1],
                           lr_search={"extend": True, "max_extensions": 2})
    (root / "search.yaml").write_text(yaml.safe_dump(config))
    return root


def test_a_dry_run_lists_the_first_round_and_says_more_may_follow(search_workflow):
    plan = snakemake(search_workflow, "-n", "--cores", "1", "--configfile=search.yaml").stdout
    assert re.search(r"^lr_search\s+2$", plan, re.M) and re.search(r"^train\s+10$", plan, re.M), plan
    assert "checkpoint jobs, which will result in alteration of the DAG" in plan


@pytest.mark.slow
def test_the_checkpoint_on_fake_runs_adds_the_extra_jobs(search_workflow):
    """Round 0 decided by the workflow's own checkpoint on fake runs (no training); the next plan holds the added rate's jobs."""
    results = search_workflow / "results" / "search"
    for upstream in ("base_model", "data/train", "data/val", "data/test", "features/train", "features/val", "features/test"):
        (results / upstream).mkdir(parents=True)  # older than the runs: nothing upstream asks for a rerun
        os.utime(results / upstream, (1e9, 1e9))
    write_runs(results / "runs", {**by_run("full", 1e-5, FULL), **by_run("frozen", 3e-3, FROZEN)})
    decisions = [f"results/search/lr_search/{v}/round0.json" for v in ("full", "frozen")]
    snakemake(search_workflow, "--cores", "1", "--allowed-rules", "lr_search", "--configfile=search.yaml", "--", *decisions)
    assert json.loads((search_workflow / decisions[0]).read_text())["train"] == [3.33e-5]
    assert json.loads((search_workflow / decisions[1]).read_text())["train"] == []

    plan = snakemake(search_workflow, "-n", "--cores", "1", "--allowed-rules", "lr_search", "train", "aggregate",
                     "--configfile=search.yaml", "--", "results/search/tables/runs.csv").stdout
    assert sorted(re.findall(r"wildcards: variant=(\S+), seed=(\d)", plan)) == [("full/lr3.33e-05", "0"), ("full/lr3.33e-05", "1")], plan
    assert re.search(r"^lr_search\s+1$", plan, re.M) and "results/search/lr_search/full/round1.json" in plan
    aggregate = plan.split("rule aggregate:")[1]
    assert "results/search/lr_search/full/round1.json" in aggregate  # it waits for round 1, which waits for the added runs

    write_runs(results / "runs", by_run("full", 1e-3, [3.33e-5]))  # the added rate does worse: the search ends
    snakemake(search_workflow, "--cores", "1", "--allowed-rules", "lr_search", "--configfile=search.yaml", "--",
              "results/search/lr_search/full/round1.json")
    plan = snakemake(search_workflow, "-n", "--cores", "1", "--allowed-rules", "lr_search", "train", "aggregate",
                     "--configfile=search.yaml", "--", "results/search/tables/runs.csv").stdout
    assert re.search(r"^aggregate\s+1$", plan, re.M) and not re.search(r"^(train|lr_search)\s", plan, re.M), plan
    aggregate = plan.split("rule aggregate:")[1].split("output:")[0]
    assert all(f"results/search/runs/full/lr3.33e-05/seed{seed}/{name}" in aggregate for seed in (0, 1) for name in ("summary.json", "predictions.csv"))


@pytest.mark.slow
def test_a_finished_study_given_another_variant_trains_it_and_aggregates_again(search_workflow):
    """config/tiny-en-part1.yaml then config/tiny-en.yaml: the second config's new variant must train, its search run and
    the tables, figures and deck follow, although the first study's outputs all exist (Snakemake alone said "Nothing to be
    done", its aggregate job waiting on the new variant's undecided lr-search checkpoint)."""
    results = search_workflow / "results" / "search"
    for upstream in ("base_model", "data/train", "data/val", "data/test", "features/train", "features/val", "features/test"):
        (results / upstream).mkdir(parents=True)
        os.utime(results / upstream, (1e9, 1e9))
    first = yaml.safe_load((search_workflow / "search.yaml").read_text())
    del first["train"]["variants"]["full"]
    (search_workflow / "first.yaml").write_text(yaml.safe_dump(first))
    write_runs(results / "runs", by_run("frozen", 3e-3, FROZEN))  # the first study: frozen, an interior optimum,
    snakemake(search_workflow, "--cores", "1", "--allowed-rules", "lr_search", "--configfile=first.yaml", "--",
              "results/search/lr_search/frozen/round0.json")
    plan = snakemake(search_workflow, "-n", "--cores", "1", "--configfile=first.yaml").stdout  # ... and every output it makes
    for line in re.findall(r"^\s+output: (.+)$", plan, re.M):
        for name in line.split(", "):
            (search_workflow / name).parent.mkdir(parents=True, exist_ok=True)
            (search_workflow / name).touch()
    assert json.loads((results / "lr_search" / "frozen" / "round0.json").read_text())["train"] == []
    assert "Nothing to be done" in "".join(snakemake(search_workflow, "-n", "--cores", "1", "--configfile=first.yaml").stdout)

    plan = snakemake(search_workflow, "-n", "--cores", "1", "--configfile=search.yaml")  # the second: frozen and full
    out = plan.stdout + plan.stderr
    assert sorted(re.findall(r"wildcards: variant=(\S+), seed=(\d)", out)) == sorted(
        (f"full/lr{lr:g}", str(seed)) for lr in FULL for seed in (0, 1)), out[-3000:]
    assert re.search(r"^aggregate\s+1$", out, re.M) and "results/search/lr_search/full/round0.json" in out
    assert re.search(r"Missing output files: results/search/tables/plan-[0-9a-f]{12}\.done", out)
