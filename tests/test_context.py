"""The context axis in the aggregate: each context's test AUC against 30 s (paired intervals), its cost, the shortest lossless one."""

import numpy as np
import pandas as pd
import pytest

from gwlora.aggregate import CONTEXT_COLUMNS, context_table, within_tolerance

SEEDS = (0, 1, 2)  # three: with two, a pooled interval is Student's t at 1 degree of freedom, rarely decided


def predictions_of(scores: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"window": np.arange(len(labels)), "label": labels, "snr": 0.0, "logit": scores})


def study(contexts_scores: dict[str, dict[str, list]], step_ms: dict[str, float], labels) -> tuple[pd.DataFrame, dict]:
    """Selected runs and predictions of variants on the context axis: {variant: {context: [scores per seed]}}."""
    rows, predictions = [], {}
    for base, by_context in contexts_scores.items():
        for context, per_seed in by_context.items():
            for seed, scores in zip(SEEDS, per_seed):
                name = f"{base}-ctx{context}"
                predictions[name, seed] = predictions_of(scores, labels)
                rows.append({"variant": name, "base_variant": base, "context_axis": context, "context": context, "seed": seed,
                             "test_auc": float(np.mean(scores[labels == 1, None] > scores[None, labels == 0])), "step_time_ms": step_ms[context]})
    return pd.DataFrame(rows), predictions


def test_within_tolerance_reads_the_interval():
    assert within_tolerance(-0.004, 0.01) == "yes"
    assert within_tolerance(-0.03, -0.006) == "no"
    assert within_tolerance(-0.02, 0.01) == "undecided"


def test_the_shortest_context_within_tolerance_of_30s_and_its_cost():
    rng = np.random.default_rng(0)
    labels = np.arange(400) % 2
    reference = [labels + rng.normal(0, 0.8, len(labels)) for _ in SEEDS]
    worse = [rng.normal(0, 1, len(labels)) + 0.2 * labels for _ in SEEDS]  # clip: far below 30 s
    jitter = np.random.default_rng(1)
    noisy = [r + jitter.normal(0, 0.2, len(labels)) for r in reference]  # close to 30 s: an interval across -0.005
    scores = {
        "full": {"clip": worse, "2s": [r.copy() for r in reference], "30s": reference},  # 2 s: the same scores as 30 s
        "lora-r8": {"clip": noisy, "5s": [r.copy() for r in reference], "30s": reference},
    }
    runs, predictions = study(scores, {"clip": 10.0, "2s": 20.0, "5s": 40.0, "30s": 400.0}, labels)
    table = context_table(runs, predictions)
    assert list(table.columns) == CONTEXT_COLUMNS
    full = table[table.variant == "full"].set_index("context")
    assert list(full.index) == ["clip", "2s", "30s"] and set(full.reference) == {"30s"}
    assert full.loc["clip", "within_tolerance"] == "no" and full.loc["clip", "ci_high"] < -0.005
    assert full.loc["2s", "within_tolerance"] == "yes" and full.loc["2s", "delta_vs_reference"] == 0
    assert full.loc["30s", "within_tolerance"] == "reference"
    assert set(full.shortest_within_tolerance) == {"2s"}
    assert full.loc["2s", "step_cost_vs_reference"] == pytest.approx(0.05)
    assert full.loc["2s", "test_auc"] == pytest.approx(full.loc["30s", "test_auc"])
    lora = table[table.variant == "lora-r8"].set_index("context")
    assert lora.loc["clip", "within_tolerance"] == "undecided"  # the 5 s context is lossless, but clip cannot be ruled out
    assert set(lora.shortest_within_tolerance) == {"undecided"}


def test_no_context_axis_gives_only_the_header():
    runs = pd.DataFrame({"variant": ["full"], "context_axis": [None], "base_variant": ["full"]})
    table = context_table(runs, {})
    assert table.empty and list(table.columns) == CONTEXT_COLUMNS


def test_the_context_figure_is_listed_for_a_context_axis_and_drawn_from_context_csv(tmp_path):
    from conftest import tiny_config
    from gwlora.plot import figure_names, make_figures

    single = tiny_config()
    axis = tiny_config(model={**single["model"], "context": ["clip", "2s", "30s"]})
    assert "context_auc_vs_cost" not in figure_names(single) and figure_names(axis)[-1] == "context_auc_vs_cost"

    rng = np.random.default_rng(0)
    labels = np.arange(200) % 2
    reference = [labels + rng.normal(0, 0.8, len(labels)) for _ in SEEDS]
    runs, predictions = study({"full": {"clip": [r + rng.normal(0, 0.3, len(labels)) for r in reference], "30s": reference}},
                              {"clip": 10.0, "30s": 400.0}, labels)
    context_table(runs, predictions).to_csv(tmp_path / "context.csv", index=False)
    pd.DataFrame({"variant": ["full"], "seed": [0], "step": [1], "train_time_s": [1.0], "val_auc": [0.5], "val_loss": [0.7]}).to_csv(tmp_path / "curves.csv", index=False)
    paths = make_figures(tmp_path / "curves.csv", tmp_path / "figures", figures=["context_auc_vs_cost"], context_csv=tmp_path / "context.csv")
    assert [p.name for p in paths] == ["context_auc_vs_cost.png", "context_auc_vs_cost.svg"] and all(p.stat().st_size > 0 for p in paths)
