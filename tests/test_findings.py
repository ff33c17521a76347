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
    NOT_RESOLVED, PAPER_ADAPTER_OVERHEAD, analysis, context_words, counts, introduction_claims, lora_costs, seed_words, setup, shift_findings,
    step_time_words, what_trains, write_findings,
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
    # the deck says what its intervals hold: the windows' sampling, and with several seeds their spread too
    assert "seeds" not in one["interval"] and three["interval"].endswith("widened by the seeds' spread")


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


def timed_runs(adapter: tuple[float, float], merged: tuple[float, float], base=(3.0, 3.2), seeds=(0, 1)) -> pd.DataFrame:
    """Selected runs with each mode's batch-1 latency quartiles (ms) as gwlora.measure records them, the same in every seed."""
    def run(variant, mode, spread, seed):
        return {"variant": variant, "seed": seed, "selected": True, "step_time_ms": 100.0 + seed,
                "latency_base_b1_q25_ms": base[0], "latency_base_b1_q75_ms": base[1],
                f"latency_{mode}_b1_q25_ms": spread[0], f"latency_{mode}_b1_q75_ms": spread[1]}
    return pd.DataFrame([run("adapter-b8", "unmerged", adapter, s) for s in seeds] + [run("lora-r4", "merged", merged, s) for s in seeds])


@pytest.mark.parametrize("adapter, verdict", [((3.6, 3.8), "confirmed"), ((3.1, 3.5), NOT_RESOLVED), ((2.0, 2.2), "not seen here")])
def test_adapter_latency_claim_is_judged_by_the_repetitions_spread(adapter, verdict):
    """Confirmed only when the adapter's passes (their quartiles) lie above the base's in every run; overlapping ones are not resolved."""
    claims = introduction_claims(summary_rows(), latency_rows(20.0), timed_runs(adapter, merged=(3.05, 3.15)), "clip")
    assert claims["adapter"]["verdict"] == verdict and claims["adapter"]["study_batch"] == 16
    # a merged LoRA inside its base's spread: no claim either way
    assert claims["lora_merged"] == {"variant": "lora-r4", "batch1": "+2%", "verdict": NOT_RESOLVED}
    # clip context: the prompts lengthen the sequence, they take no audio
    assert claims["prompt"]["verdict"] == "not seen here" and "no audio lost" in claims["prompt"]["effect"]
    assert PAPER_ADAPTER_OVERHEAD == (2, 30)


def test_a_merged_lora_is_judged_slower_only_beyond_its_spread_and_old_records_are_not_judged():
    slower = introduction_claims(summary_rows(), latency_rows(20.0), timed_runs((3.6, 3.8), merged=(3.5, 3.7)), "clip")
    assert slower["lora_merged"]["verdict"] == "not seen here"
    seeds_disagree = pd.concat([timed_runs((3.6, 3.8), (3.5, 3.7), seeds=(0,)), timed_runs((2.0, 2.2), (2.0, 2.2), seeds=(1,))])
    assert introduction_claims(summary_rows(), latency_rows(20.0), seeds_disagree, "clip")["adapter"]["verdict"] == NOT_RESOLVED
    unrecorded = timed_runs((3.6, 3.8), (3.5, 3.7)).drop(columns=["latency_base_b1_q25_ms"])  # a record from before the quartiles
    assert introduction_claims(summary_rows(), latency_rows(20.0), unrecorded, "clip")["adapter"]["verdict"] == NOT_RESOLVED


def test_shifted_sets_are_judged_by_their_verdicts_against_full():
    config = tiny_config()
    rows = [("test", "full", 0.9, None, True, 0), ("test", "lora-r2", 0.85, "indistinguishable", True, 0),
            ("quiet", "full", 0.7, None, True, 0), ("quiet", "lora-r2", 0.6, "lower", True, 0), ("quiet", "frozen", 0.5, "lower", False, 1)]
    shift = pd.DataFrame(rows, columns=["test_set", "variant", "auc", "verdict_vs_full", "above_chance", "one_class"])
    (quiet,) = shift_findings(shift, config)
    assert quiet["name"] == "quiet" and quiet["best"] == "full" and quiet["best_in_distribution"] == "0.9000"
    assert quiet["against_full"] == "lower lora-r2, frozen; the other intervals cover zero."
    assert quiet["at_chance"] == ["frozen"] and quiet["one_class"] == ["frozen"]
    assert quiet["changes"] == [f"quieter signals, SNR 4–8 (training {config['data']['snr']['min']:g}–{config['data']['snr']['max']:g})"]
    assert shift_findings(shift[shift.test_set == "test"], config) == []


def test_findings_are_written_as_json(tmp_path):
    write_findings(tmp_path / "findings.json", {"n": np.int64(3), "flag": np.bool_(True), "text": "a"})
    assert json.loads((tmp_path / "findings.json").read_text()) == {"n": 3, "flag": True, "text": "a"}


def test_the_workflow_slide_has_every_rule_of_the_rule_files():
    """Every rule and checkpoint, those inside an `if` block too (the matched filter's), with an arrow from each rule whose
    output another's input reads: through unpack(function) (encoder_outputs), a constant (BANK_FILE), a path (the data)."""
    rules = {name for path in (REPO / "workflow" / "rules").glob("*.smk")
             for name in re.findall(r"^\s*(?:rule|checkpoint) (\w+):", path.read_text(), re.M)}
    graph = rule_graph(REPO / "Snakefile")
    assert set(graph) == rules and {"evaluate", "template_bank", "matched_filter", "lr_search"} <= set(graph)
    assert graph["train"] == ["evaluate", "lr_search", "evaluate_extension", "aggregate"] and graph["download"] == ["dataset"] and graph["deck"] == []
    assert graph["encoder_outputs"] == ["train"] and graph["template_bank"] == ["matched_filter"] and graph["matched_filter"] == ["aggregate"]
    assert "matched_filter" in graph["dataset"] and "encoder_outputs" in graph["features"]
    assert all(rule in diagram(graph) for rule in rules)


def test_the_workflow_slide_shows_only_the_stages_a_config_runs():
    graph = rule_graph(REPO / "Snakefile")
    demo = stages_run(graph, tiny_config())  # simulated noise: no download
    assert "download" not in demo and "evaluate" in demo["train"]
    gwosc = copy.deepcopy(tiny_config())
    gwosc["data"]["source"], gwosc["evaluation"]["test_sets"] = "gwosc", {}
    shown = stages_run(graph, gwosc)
    assert shown["download"] == ["dataset"] and "evaluate" not in shown and "evaluate" not in shown["train"]
    assert demo["template_bank"] == ["matched_filter"] and "matched_filter" in demo["dataset"]  # tiny_config runs the matched filter
    without = copy.deepcopy(tiny_config())
    without["train"]["variants"].pop("matched-filter")
    assert not {"matched_filter", "template_bank"} & {*stages_run(graph, without), *stages_run(graph, without)["dataset"]}


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


@pytest.mark.parametrize("side, seeds, words", [(-1, 2, "faster in every seed"), (1, 2, "slower in every seed"),
                                                (0, 3, f"a difference {NOT_RESOLVED} (the seeds' step times"),
                                                (0, 2, f"a difference {NOT_RESOLVED} (2 timings a side, which noise alone would part 1 time in 3"),
                                                (0, 1, f"a difference {NOT_RESOLVED} (one timing per side")])
def test_a_lora_step_is_faster_or_slower_only_when_its_seeds_separate(side, seeds, words):
    assert step_time_words(side, seeds).startswith(words)


def cost_rows(lora_ms, full_ms):
    """Selected runs of lora-r4 and full with the given per-seed step times, and their summary rows (means)."""
    runs = pd.DataFrame([{"variant": v, "seed": s, "selected": True, "step_time_ms": ms} for v, times in (("lora-r4", lora_ms), ("full", full_ms))
                         for s, ms in enumerate(times)])
    def row(v, times):
        return pd.Series({"variant": v, "step_time_ms": float(np.mean(times)), "trainable_vs_full_percent": 3.0, "peak_memory_mb": 100.0,
                          "checkpoint_mb": 1.0})
    return runs, row("lora-r4", lora_ms), row("full", full_ms)


def test_a_step_time_ratio_from_overlapping_seeds_is_not_a_finding():
    """The audio set's case: 757 and 208 ms against 293 and 296 ms is a 1.64x mean ratio that the seeds do not resolve."""
    runs, lora, full = cost_rows((757.0, 208.0), (293.0, 296.0))
    costs = lora_costs(lora, full, runs)
    assert costs["step_time"] == f"1.64× that of full fine-tuning, {NOT_RESOLVED}" and not costs["not_faster"]
    assert costs["step_time_means"].startswith(f"a difference {NOT_RESOLVED}") and costs["step_ratio"] == "1.64×"
    runs, lora, full = cost_rows((205.0, 215.0, 210.0), (295.0, 305.0, 300.0))
    assert lora_costs(lora, full, runs)["step_time"] == "0.70× that of full fine-tuning" and lora_costs(lora, full, runs)["step_time_means"].startswith("faster")
    runs, lora, full = cost_rows((205.0, 215.0), (295.0, 305.0))  # apart, but 2 a side part by chance 1 time in 3
    assert NOT_RESOLVED in lora_costs(lora, full, runs)["step_time"] and "1 time in 3" in lora_costs(lora, full, runs)["step_time_means"]
    runs, lora, full = cost_rows((200.0,), (300.0,))  # one seed: no repetition, no verdict
    assert NOT_RESOLVED in lora_costs(lora, full, runs)["step_time"]


def ranked_summary():
    """A study where peft-ia3 has the best validation numbers and the best test AUC but one of its selected runs did not learn."""
    base = {"trainable_parameters": 1000, "trainable_percent": 1.0, "lr": 1e-3, "step_time_ms": 100.0, "peak_memory_mb": 100.0, "checkpoint_mb": 1.0,
            "trainable_vs_full_percent": 1.0, "latency_merged_ms": np.nan, "latency_unmerged_ms": np.nan, "latency_base_ms": 3.0, "rank": np.nan}
    rows = [("full", "full", 0.90, 0.30, 0), ("frozen", "frozen", 0.80, 0.45, 0), ("lora-r2", "lora", 0.92, 0.28, 0),
            ("lora-r8", "lora", 0.95, 0.29, 0), ("peft-ia3", "peft", 0.99, 0.10, 1)]
    return pd.DataFrame([{**base, "variant": v, "family": f, "config_key": f, "val_auc": auc, "test_auc": auc, "best_val_loss": loss,
                          "did_not_learn": flagged, "rank": {"lora-r2": 2, "lora-r8": 8}.get(v, np.nan)} for v, f, auc, loss, flagged in rows])


def test_a_variant_that_did_not_learn_is_never_best_and_best_follows_the_lr_selection():
    summary = ranked_summary()
    by_loss = analysis(summary, pd.DataFrame(columns=["variant", "baseline", "seed"]))
    assert by_loss["best_variant"] == "lora-r2" and by_loss["best_by"] == "lowest validation loss" and by_loss["not_ranked"] == ["peft-ia3"]
    assert by_loss["lora"]["variant"] == "lora-r2"  # lowest val loss of the LoRAs, as the lrs were selected; not lora-r8's higher val AUC
    by_auc = analysis(summary, pd.DataFrame(columns=["variant", "baseline", "seed"]), selection="val_auc")
    assert by_auc["best_variant"] == "lora-r8" and by_auc["lora"]["variant"] == "lora-r8"
    nobody = analysis(summary.assign(did_not_learn=1), pd.DataFrame(columns=["variant", "baseline", "seed"]))
    assert nobody["best_variant"] is None and "lora" not in nobody and len(nobody["not_ranked"]) == 5


def test_a_shifted_set_is_never_led_by_a_variant_that_did_not_learn():
    rows = [("test", "full", 0.9, 0), ("test", "peft-ia3", 0.95, 1), ("quiet", "full", 0.7, 0), ("quiet", "peft-ia3", 0.8, 1)]
    shift = pd.DataFrame([{"test_set": t, "variant": v, "auc": a, "did_not_learn": d, "verdict_vs_full": None, "above_chance": True, "one_class": 0}
                          for t, v, a, d in rows])
    (quiet,) = shift_findings(shift, tiny_config())
    assert quiet["best"] == "full" and quiet["best_auc"] == "0.7000"
    (alone,) = shift_findings(shift[shift.variant == "peft-ia3"], tiny_config())
    assert alone["best"] is None


def test_no_variant_is_highest_on_a_shifted_set_where_every_interval_covers_chance():
    """The demo's quiet set named "highest AUC … frozen, 0.5444" while every variant was not told apart from chance."""
    rows = [("test", "full", 0.9, True), ("test", "frozen", 0.8, True), ("quiet", "full", 0.52, False), ("quiet", "frozen", 0.5444, False)]
    shift = pd.DataFrame([{"test_set": t, "variant": v, "auc": a, "did_not_learn": 0, "verdict_vs_full": None, "above_chance": c, "one_class": 0}
                          for t, v, a, c in rows])
    (quiet,) = shift_findings(shift, tiny_config())
    assert quiet["best"] is None and quiet["chance_only"] and quiet["at_chance"] == ["full", "frozen"]
    shift.loc[shift.variant == "full", "above_chance"] = True
    (quiet,) = shift_findings(shift, tiny_config())
    assert quiet["best"] == "frozen" and not quiet["chance_only"]


@pytest.mark.parametrize("lrs, seeds, words", [((1e-3,), (0,), "5 training runs (5 variants × 1 seed)"),
                                              ((1e-3, 1e-4), (0, 1), "20 training runs (10 variant–learning-rate pairs × 2 seeds)")])
def test_the_provenance_counts_variant_lr_pairs_and_adapted_ways_leave_out_the_baselines(lrs, seeds, words):
    summary = ranked_summary()
    runs = pd.DataFrame([{"variant": v, "lr": lr, "seed": s} for v in summary.variant for lr in lrs for s in seeds])
    found = counts(summary, runs)
    assert found["provenance"] == words and found["adapted"] == 3 and found["variants"] == 5


def test_the_failed_jobs_errors_are_told_once_more_in_one_line_each(tmp_path):
    """With no internet the download and the base model fail; their errors, not the JSON command lines, come last."""
    from gwlora.rulegraph import failures

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "base_model.log").write_text("base-model failed\nTraceback (most recent call last):\n  ...\n"
                                                      "gwlora.cli.StageError: model.pretrained 'openai/whisper-small': not in the local cache\n")
    snakemake_log = ("Error in rule base_model:\n    message: None\n    jobid: 6\n    output: results/x/base_model\n"
                     "    log: logs/base_model.log (check log file(s) for error details)\n    shell:\n        python -m gwlora.base_model "
                     "--model-config '{\"pretrained\": \"openai/whisper-small\"}'\n"
                     "Error in rule download:\n    jobid: 5\n    log: logs/download.log (check log file(s) for error details)\n")
    assert failures(snakemake_log, tmp_path) == [
        "base_model: model.pretrained 'openai/whisper-small': not in the local cache (log: logs/base_model.log)",
        "download: no log written (log: logs/download.log)"]


def test_a_run_recorded_before_the_latency_quartiles_still_reads_and_a_new_one_keeps_them(tmp_path):
    """summary.json gained latency_quartiles_ms (the repetitions behind each median); older records read without it."""
    from gwlora.config import expand_variants
    from gwlora.records import read_summary
    from run_fixtures import fake_summary

    variant = next(iter(expand_variants(tiny_config()["train"]).values()))
    fake_summary(variant, 0).write(tmp_path)
    record = json.loads((tmp_path / "summary.json").read_text())
    assert record["latency_quartiles_ms"] == {}
    record.pop("latency_quartiles_ms")
    (tmp_path / "summary.json").write_text(json.dumps(record))
    assert read_summary(tmp_path).costs.latency_quartiles_ms == {}
    record["latency_quartiles_ms"] = {"eval": {"base": [2.9, 3.1]}}
    (tmp_path / "summary.json").write_text(json.dumps(record))
    assert read_summary(tmp_path).costs.latency_quartiles_ms["eval"]["base"] == [2.9, 3.1]


def test_the_latency_passes_leave_their_quartiles_for_the_noise_rule():
    """gwlora.measure keeps every timed pass; the quartiles bracket the median, one pair per mode."""
    import torch
    from gwlora.measure import latency_ms, latency_samples, quartiles
    from gwlora.precision import Precision

    model, x = torch.nn.Linear(8, 2), torch.zeros(4, 8)
    samples = latency_samples(model, x, 5, Precision("fp32", "test"))
    assert len(samples["base"]) == 5 and model.training  # warm-up passes untimed; the model back in training mode
    (low, high), = quartiles(samples).values()
    assert low <= float(np.median(samples["base"])) <= high
    assert set(latency_ms(model, x, 3, Precision("fp32", "test"))) == {"base"}


def test_an_efficiency_over_several_seeds_has_the_envelope_of_the_seeds_exact_intervals():
    """Three seeds detecting 3, 4 and 3 of 8 signals: the mean 10/24 is no binomial count; its interval runs from 3's exact
    lower bound to 4's exact upper bound."""
    from gwlora.aggregate import _binomial_interval
    from gwlora.findings import efficiency_in

    eff = pd.DataFrame([{"variant": "full", "n_signal": 8, "efficiency": 10 / 24, "seed_min": 3 / 8, "seed_max": 4 / 8}])
    mean, low, high = efficiency_in(eff, "full")
    assert mean == pytest.approx(10 / 24) and low == _binomial_interval(3, 8)[0] and high == _binomial_interval(4, 8)[1]


def test_a_step_on_cached_encoder_outputs_is_never_set_against_an_uncached_one():
    """The demo's prompt claim read "training step 66.68× … the frozen encoder's": frozen trained on cached encoder outputs."""
    from gwlora.findings import CACHED_STEP, prompt_claim

    summary = pd.DataFrame([{"variant": "frozen", "family": "frozen", "step_time_ms": 0.8, "prompt_length": np.nan},
                            {"variant": "prompt-l4", "family": "prompt", "step_time_ms": 53.0, "prompt_length": 4, "sequence_positions": 54,
                             "sequence_audio_positions": 50, "audio_seconds_lost": 0.0}])
    runs = pd.DataFrame([{"variant": v, "seed": s, "selected": True, "step_time_ms": ms, "encoder_cache_used": v == "frozen"}
                         for v, ms in (("frozen", 0.8), ("prompt-l4", 53.0)) for s in range(3)])
    claim = prompt_claim(summary, runs, "clip")
    assert "66" not in claim["effect"] and "×" not in claim["effect"] and CACHED_STEP in claim["effect"]
    assert "×" in prompt_claim(summary, runs.assign(encoder_cache_used=False), "clip")["effect"]
    lora_runs, lora, full = cost_rows((200.0, 210.0, 205.0), (300.0, 310.0, 305.0))
    costs = lora_costs(lora, full, lora_runs.assign(encoder_cache_used=lora_runs.variant == "lora-r4"))
    assert costs["step_ratio"] == "n/a" and CACHED_STEP in costs["step_time"] and not costs["not_faster"]


def test_merged_latency_passes_alternate_with_the_base_and_unmerged_ones():
    """The merged passes were once timed in a block after the base/unmerged alternation, so a machine's changing load fell
    on them alone; now every round times base, unmerged and merged, and the weights end as they began."""
    import peft
    import torch
    from gwlora.measure import inference_timings
    from gwlora.precision import Precision
    from gwlora.variants import Variant

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(8, 8)

        def forward(self, x):
            return self.proj(x)

    model = peft.get_peft_model(Net(), peft.LoraConfig(r=2, target_modules=["proj"], init_lora_weights=False))
    layer = model.base_model.model.proj
    before = layer.base_layer.weight.detach().clone()
    states = []
    layer.register_forward_pre_hook(lambda module, args: states.append("base" if module.disable_adapters else "merged" if module.merged else "unmerged"))
    timings, spread = inference_timings(model, Variant(name="lora-r2", family="lora", lr=1e-3), torch.zeros(2, 8), 4, Precision("fp32", "test"))
    assert set(timings) == set(spread) == {"base", "unmerged", "merged"}
    rounds = [states[i : i + 3] for i in range(0, len(states), 3)]
    assert len(rounds) == 4 + 3 and all(sorted(r) == ["base", "merged", "unmerged"] for r in rounds)  # 3 warm-up rounds, untimed
    assert not layer.merged and torch.allclose(layer.base_layer.weight, before, atol=1e-6)


def test_the_noise_rule_states_how_often_noise_alone_passes_it():
    from gwlora.findings import MIN_REPETITIONS, TIMING_RULE, chance_apart, seed_separation

    assert chance_apart(2, 2) == pytest.approx(1 / 3) and chance_apart(3, 3) == pytest.approx(1 / 10) and MIN_REPETITIONS == 3
    assert "1 time in 10 at 3 against 3" in TIMING_RULE
    assert seed_separation([1.0, 1.1], [2.0, 2.1]) == 0 and seed_separation([1.0, 1.1, 1.2], [2.0, 2.1, 2.2]) == -1
    rng = np.random.default_rng(0)  # pure noise, 3 a side: told apart about 1 time in 10, never more than chance says
    apart = np.mean([seed_separation(rng.normal(size=3), rng.normal(size=3)) != 0 for _ in range(4000)])
    assert apart == pytest.approx(0.1, abs=0.02)
