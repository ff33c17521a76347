"""The deck's findings as data (gwlora.findings), the workflow slide's rule graph, and one slide per figure."""

import copy
import json
import re

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, tiny_config
from gwlora.cli import StageError
from gwlora.families import FAMILIES
from gwlora.deck import caption, figure_slides
from gwlora.findings import (
    PAPER_ADAPTER_OVERHEAD, context_words, introduction_claims, seed_words, setup, shift_findings, step_time_words, what_trains,
    write_findings,
)
from gwlora.plot import FIGURES, figure_names
from gwlora.rulegraph import diagram, rule_graph, stages_run

ROW = {"variant": "v", "layers": 2.0, "rank": 4.0, "adapter_style": "houlsby", "bottleneck": 8.0, "prompt_length": 16.0, "peft_type": "VERA"}


def test_every_family_says_what_it_trains_and_an_unknown_one_is_refused():
    texts = {family: what_trains({**ROW, "family": family}) for family in FAMILIES}
    assert texts["lora"] == "LoRA A, B (rank 4) + head" and texts["frozen"] == "head only"
    assert len(set(texts.values())) == len(FAMILIES)  # no family described as another
    with pytest.raises(StageError, match=r"variant v: family 'ia3' has no 'what trains' text"):
        what_trains({**ROW, "family": "ia3"})


@pytest.mark.parametrize("context, words", [("clip", "the clip's own length"), ("2s", "2 s of padding"), ("30s", "30 s of padding, as Whisper"),
                                            (["clip", "30s"], "a study axis, clip, 30s")])
def test_the_context_is_told_as_it_ran(context, words):
    assert context_words(context).startswith(words)


def test_one_seed_is_never_a_mean_over_seeds():
    one, three = seed_words([0]), seed_words([0, 1, 2])
    assert (one["count"], one["mean"], one["several"]) == ("1 seed", "the one seed's", False)
    assert (three["count"], three["mean"], three["several"]) == ("3 seeds", "mean over 3 seeds", True)


def summary_rows(lrs_tried=(1, 1)):
    return pd.DataFrame([
        {"variant": "frozen", "family": "frozen", "lr": 1e-3, "lrs_tried": lrs_tried[0], "trainable_parameters": 10_000, "step_time_ms": 100.0,
         "prompt_length": np.nan},
        {"variant": "prompt-16", "family": "prompt", "lr": 1e-3, "lrs_tried": lrs_tried[1], "trainable_parameters": 12_000,
         "step_time_ms": 150.0, "prompt_length": 16.0, "sequence_positions": 1516, "sequence_audio_positions": 1500, "audio_seconds_lost": 0.0},
    ])


@pytest.mark.parametrize("lrs_tried, heading", [((1, 1), "learning rate"), ((1, 3), "learning rate (selected)")])
def test_the_lr_is_called_selected_only_when_there_was_a_choice(lrs_tried, heading):
    found = setup(summary_rows(lrs_tried), pd.DataFrame({"seed": [0]}), tiny_config())
    assert found["lr_heading"] == heading and found["lr_selected"] == (heading != "learning rate")
    assert [v["what_trains"] for v in found["variants"]] == ["head only", "16 prompt vectors + head"]


def latency_rows(adapter_overhead):
    rows = [{"variant": "adapter-b8", "family": "adapter", "batch": b, "unmerged_overhead_percent": adapter_overhead, "merged_ms": np.nan,
             "merged_overhead_percent": np.nan} for b in (1, 16)]
    rows.append({"variant": "lora-r4", "family": "lora", "batch": 1, "unmerged_overhead_percent": 15.0, "merged_ms": 3.0,
                 "merged_overhead_percent": 2.0})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("overhead, verdict", [(20.0, "confirmed"), (5.0, "not seen here")])
def test_adapter_latency_claim_is_judged_beyond_the_timing_noise(overhead, verdict):
    claims = introduction_claims(summary_rows(), latency_rows(overhead), "clip")
    assert claims["adapter"]["verdict"] == verdict and claims["adapter"]["study_batch"] == 16
    assert claims["lora_merged"] == {"variant": "lora-r4", "batch1": "+2%", "verdict": "confirmed"}
    # clip context: the prompts lengthen the sequence, they take no audio
    assert claims["prompt"]["verdict"] == "not seen here" and "no audio lost" in claims["prompt"]["effect"]
    assert PAPER_ADAPTER_OVERHEAD == (2, 30)


def test_shifted_sets_are_judged_by_their_verdicts_against_full():
    config = tiny_config()
    rows = [("test", "full", 0.9, None, True, 0), ("test", "lora-r2", 0.85, "indistinguishable", True, 0),
            ("quiet", "full", 0.7, None, True, 0), ("quiet", "lora-r2", 0.6, "lower", True, 0), ("quiet", "frozen", 0.5, "lower", False, 1)]
    shift = pd.DataFrame(rows, columns=["test_set", "variant", "auc", "verdict_vs_full", "above_chance", "one_class"])
    (quiet,) = shift_findings(shift, config)
    assert quiet["name"] == "quiet" and quiet["best"] == "full" and quiet["best_in_distribution"] == "0.9000"
    assert quiet["against_full"] == "lower lora-r2, frozen; the other intervals cover zero."
    assert quiet["at_chance"] == ["frozen"] and quiet["one_class"] == ["frozen"]
    assert quiet["changes"] == ["snr.min 4.0", "snr.max 8.0"]
    assert shift_findings(shift[shift.test_set == "test"], config) == []


def test_findings_are_written_as_json(tmp_path):
    write_findings(tmp_path / "findings.json", {"n": np.int64(3), "flag": np.bool_(True), "text": "a"})
    assert json.loads((tmp_path / "findings.json").read_text()) == {"n": 3, "flag": True, "text": "a"}


def test_the_workflow_slide_has_every_rule_of_the_rule_files():
    rules = {name for path in (REPO / "workflow" / "rules").glob("*.smk") for name in re.findall(r"^rule (\w+):", path.read_text(), re.M)}
    graph = rule_graph(REPO / "Snakefile")
    assert set(graph) == rules and "evaluate" in graph
    assert graph["train"] == ["evaluate", "aggregate"] and graph["download"] == ["dataset"] and graph["deck"] == []
    assert all(rule in diagram(graph) for rule in rules)


def test_the_workflow_slide_shows_only_the_stages_a_config_runs():
    graph = rule_graph(REPO / "Snakefile")
    demo = stages_run(graph, tiny_config())  # simulated noise: no download
    assert "download" not in demo and "evaluate" in demo["train"]
    gwosc = copy.deepcopy(tiny_config())
    gwosc["data"]["source"], gwosc["evaluation"]["test_sets"] = "gwosc", {}
    shown = stages_run(graph, gwosc)
    assert shown["download"] == ["dataset"] and "evaluate" not in shown and "evaluate" not in shown["train"]


def test_every_figure_the_plot_stage_draws_has_a_slide_and_a_caption(tmp_path):
    every = tiny_config(model={**tiny_config()["model"], "context": ["clip", "30s"]})  # the demo with a context axis: every figure
    assert figure_names(every) == list(FIGURES)
    for name in FIGURES:
        (tmp_path / f"{name}.png").write_bytes(b"png")
    slides = figure_slides(tmp_path, every, REPO / "workflow" / "report")
    shown = [s["name"] for section in slides.values() for s in section]
    assert sorted(shown) == sorted(FIGURES)
    assert all(s["caption"].strip() and s["title"] for section in slides.values() for s in section)
    captions = {s["name"]: s["caption"] for section in slides.values() for s in section}
    assert "``" not in captions["context_auc_vs_cost"]  # reST made Markdown
    assert "one training seed" in captions["costs"] and "mean over" not in captions["costs"]  # the demo's one seed
    with pytest.raises(StageError, match=r"no example_inputs.png, .*; run the plot stage first"):
        figure_slides(tmp_path / "empty", every, REPO / "workflow" / "report")


def test_a_caption_of_several_seeds_says_mean(tmp_path):
    config = tiny_config(train__seeds=[0, 1])
    (tmp_path / "costs.png").write_bytes(b"png")
    assert "mean over training seeds" in caption(REPO / "workflow" / "report" / "costs.rst", config)
    with pytest.raises(StageError, match=r"nothing.rst: no caption for figure 'nothing'"):
        caption(tmp_path / "nothing.rst", config)


@pytest.mark.parametrize("ratio, words", [(0.5, "the gradients and optimiser updates"), (1.05, "no speed-up"), (1.5, "slower")])
def test_a_lora_step_is_faster_or_slower_only_beyond_the_timing_noise(ratio, words):
    assert step_time_words(ratio).startswith(words)
