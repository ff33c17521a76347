"""Convergence shown: a run still improving when it ended is flagged, and a comparison with an unconverged side gives no verdict."""

import numpy as np
import pandas as pd
import pytest

from gwlora.aggregate import differences, display_table, summarise, with_convergence
from gwlora.compare import NOT_CONVERGED, differences_table
from gwlora.findings import against_full, comparison
from gwlora.scoring import still_improving


@pytest.mark.parametrize("val_losses, stopped, expected", [
    ([0.69, 0.60, 0.55, 0.50], False, True),  # lowest at the last evaluation: more steps could lower it
    ([0.69, 0.55, 0.50, 0.52], False, True),  # lowest at the one before: within the window
    ([0.69, 0.50, 0.52, 0.55, 0.56], False, False),  # rose for three evaluations after its lowest: converged
    ([0.69, 0.50, 0.52, 0.55], True, False),  # stopped by its patience: not improving
    ([0.69], False, True),  # one evaluation cannot show convergence
    ([], False, False),
])
def test_a_run_is_still_improving_when_its_lowest_val_loss_is_among_its_last_evaluations(val_losses, stopped, expected):
    assert still_improving(val_losses, stopped) is expected


def runs_table(flags: dict[tuple[str, int], tuple[bool, bool]]) -> pd.DataFrame:
    """Selected runs of each (variant, seed) with their (did_not_learn, still_improving) flags."""
    return pd.DataFrame([{"variant": v, "seed": s, "lr": 1e-3, "selected": True, "did_not_learn": dnl, "still_improving": imp}
                         for (v, s), (dnl, imp) in flags.items()])


def predictions(gap: float) -> dict:
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(150), np.zeros(150)].astype(int)
    out = {}
    for seed in (0, 1):
        base = labels * 1.0 + rng.normal(0, 1.0, 300)
        out["full", seed] = pd.DataFrame({"window": range(300), "label": labels, "logit": base})
        out["lora-r8", seed] = pd.DataFrame({"window": range(300), "label": labels, "logit": base + gap * labels})
    return out


def test_a_clear_difference_with_a_baseline_still_improving_reads_not_converged_with_its_interval():
    runs = runs_table({("full", 0): (False, True), ("full", 1): (False, False), ("lora-r8", 0): (False, False), ("lora-r8", 1): (False, False)})
    diffs = with_convergence(differences_table(predictions(3.0), [("lora-r8", "full")], n_resamples=300), runs)
    pooled = diffs[diffs.seed.astype(str) == "pooled"].iloc[0]
    assert pooled.ci_low > 0  # the interval alone would say "higher"
    assert pooled.verdict == NOT_CONVERGED and pooled.unconverged == "full still improving in 1 of 2 seeds"
    per_seed = diffs[diffs.seed.astype(str) != "pooled"].set_index("seed")
    assert per_seed.loc[0, "verdict"] == NOT_CONVERGED and per_seed.loc[1, "verdict"] == "higher"
    found = comparison(diffs, "lora-r8", "full")
    assert found["verdict"] == NOT_CONVERGED and found["text"].startswith("not converged (+")
    assert found["unconverged"] == "full still improving in 1 of 2 seeds"


def test_a_side_that_did_not_learn_is_named_and_converged_pairs_keep_their_verdict(tmp_path):
    flags = {("full", 0): (True, False), ("full", 1): (True, True), ("lora-r8", 0): (False, False), ("lora-r8", 1): (False, False)}
    diffs = differences(predictions(3.0), runs_table(flags))
    pooled = diffs[diffs.seed.astype(str) == "pooled"].iloc[0]
    assert pooled.unconverged == "full did not learn in 2 of 2 seeds, still improving in 1 of 2 seeds"
    converged = differences(predictions(3.0), runs_table({k: (False, False) for k in flags}))
    assert set(converged.verdict) == {"higher"} and set(converged.unconverged) == {""}
    # differences.csv read back from disk: its empty "unconverged" cells are NaN, and the sentence keeps its verdict
    converged.to_csv(tmp_path / "differences.csv", index=False)
    found = comparison(pd.read_csv(tmp_path / "differences.csv"), "lora-r8", "full")
    assert found["text"].startswith("higher") and found["unconverged"] == ""


def test_the_shifted_sets_sentence_names_the_unconverged_apart():
    sentence = against_full(["adapter-b8"], [], ["lora-r8"])
    assert sentence == "higher adapter-b8; not converged (no verdict) lora-r8; the other intervals cover zero."


def test_tables_count_runs_still_improving_beside_those_that_did_not_learn():
    runs = runs_table({("full", 0): (False, True), ("full", 1): (False, True), ("frozen", 0): (True, False), ("frozen", 1): (False, False)})
    from gwlora import families

    runs = runs.assign(family=runs.variant, config_key=runs.variant, sequence_positions=50, sequence_audio_positions=50,
                       sequence_audio_seconds_lost=0.0, trainable_parameters=10, trainable_percent=1.0, tpr_fpr=0.01, lr_grid_edge="",
                       **{column: np.nan for column in families.table_columns()})
    from gwlora.aggregate import METRICS

    for column in METRICS:
        runs[column] = 0.5
    summary = summarise(runs).set_index("variant")
    assert summary.loc["full", "still_improving"] == 2 and summary.loc["frozen", "did_not_learn"] == 1
    shown = display_table(summary.reset_index(), metrics=("test_auc",), parameters=False).set_index("variant")
    assert shown.loc["full", "still improving"] == "2 of 2" and shown.loc["frozen", "still improving"] == "none"
