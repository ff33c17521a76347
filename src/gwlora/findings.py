"""The study's findings as data: every verdict, ratio, claim, budget and flag the deck states.

The aggregate stage computes them from its own tables and writes them to
``tables/findings.json`` (:func:`write_findings`); the deck stage reads that
file and its template only prints (loops and values, no thresholds). Comparative
words ("higher", "lower", "indistinguishable") come from the 95% intervals of
the paired bootstrap, never from the sign of a point estimate; timing words
respect :data:`TIMING_NOISE`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .cli import StageError, atomic_file
from . import families
from .compare import NOT_CONVERGED, pooled_differences, verdict
from .config import ENCODER_LINEAR_MODULES, context_seconds
from .constants import WHISPER_CHUNK_SECONDS
from .families.matched_filter import NAME as MATCHED_FILTER

FINDINGS_FILE = "findings.json"
# Timings are single measurements on a shared machine: ratios closer to 1 than this are not told apart.
TIMING_NOISE = 0.10
# The LoRA paper's Table 1: adapter layers add 2% to 30% inference latency at small batch (GPT-2 medium, one GPU)
PAPER_ADAPTER_OVERHEAD = (2, 30)
# The methods set against LoRA on the comparison slide (besides the full and frozen baselines): the registry's methods
METHOD_FAMILIES = families.method_families()
BASELINES = ("full", "frozen")  # every variant is compared with these, when the study has them
IN_DISTRIBUTION = "test"  # the in-distribution test split's name among the test sets of shift.csv


def what_trains(row) -> str:
    """What a variant (a summary row) trains, in words; a family the deck does not know is an error, never a guess."""
    if row["family"] not in families.FAMILIES:
        raise StageError(f"variant {row['variant']}: family {row['family']!r} has no 'what trains' text (known: {', '.join(families.FAMILIES)})")
    return families.what_trains(dict(row))


def num(value, decimals: int = 4) -> str:
    """A number as the slides print it, "n/a" for a missing one."""
    return "n/a" if value is None or pd.isna(value) else f"{value:.{decimals}f}"


def _signed(value: float) -> str:
    return f"{value + 0.0:+.4f}"  # + 0.0: no "-0.0000"


def describe(delta: float, ci_low: float, ci_high: float, confidence: float = 0.95, unconverged: str = "") -> str:
    """An interval in words: "higher (+0.0120, 95% CI +0.0040 to +0.0200)", "indistinguishable (95% CI -0.0074 to +0.0168)",
    or, when a side did not converge (`unconverged` says which and why), "not converged (...)" with the interval as measured."""
    level = f"{100 * confidence:g}%"
    if np.isnan(ci_low) or np.isnan(ci_high):
        interval = f"no {level} interval"
    else:
        interval = f"{_signed(delta)}, {level} CI {_signed(ci_low)} to {_signed(ci_high)}"
    if unconverged:  # which side and why: comparison()'s "unconverged", differences.csv's column
        return f"{NOT_CONVERGED} ({interval})"
    return f"{verdict(ci_low, ci_high)} ({interval})"


def timing(ratio: float) -> str:
    """A cost ratio in words that respect the timing noise."""
    if pd.isna(ratio):
        return "n/a"
    if abs(ratio - 1) < TIMING_NOISE:
        return f"{ratio:.2f}×, within the ±{TIMING_NOISE:.0%} a single timing can vary"
    return f"{ratio:.2f}×"


def comparison(diffs: pd.DataFrame, variant: str, baseline: str) -> dict | None:
    """The pooled paired test-AUC difference of `variant` against `baseline`, in the words the intervals allow."""
    pooled = pooled_differences(diffs, baseline)
    if variant not in pooled.index:
        return None
    row = pooled.loc[variant]
    return {"variant": variant, "baseline": baseline, "verdict": row.verdict,
            "text": describe(row.delta, row.ci_low, row.ci_high, unconverged=row.get("unconverged") or ""),
            "unconverged": row.get("unconverged") or "",
            "seeds": int(row.n_seeds), "seed_sd": num(row.seed_sd)}


def _variant_facts(row: pd.Series) -> dict:
    return {"variant": row.variant, "val_auc": num(row.val_auc), "val_loss": num(row.best_val_loss), "test_auc": num(row.test_auc),
            "params": f"{int(row.trainable_parameters):,}", "lr": f"{row.lr:g}", "checkpoint_mib": num(row.checkpoint_mb, 2)}


def best_row(rows: pd.DataFrame) -> pd.Series:
    """The row with the highest validation AUC of its tested checkpoint (the first when none has one)."""
    return rows.loc[rows.val_auc.idxmax()] if rows.val_auc.notna().any() else rows.iloc[0]


def rank_sweep(summary: pd.DataFrame, diffs: pd.DataFrame) -> dict | None:
    """The paper's LoRA family across ranks, judged by whether the ranks' intervals against a baseline overlap."""
    ranks = summary[summary.config_key == "lora"]
    if len(ranks) < 2:
        return None
    out = {"n": len(ranks), "min_rank": int(ranks["rank"].min()), "max_rank": int(ranks["rank"].max())}
    for baseline in BASELINES:
        pooled = pooled_differences(diffs, baseline)
        if set(ranks.variant) <= set(pooled.index):
            pooled = pooled.loc[list(ranks.variant)]
            top, bottom = pooled.ci_low.idxmax(), pooled.ci_high.idxmin()
            rank_of = dict(zip(ranks.variant, ranks["rank"].astype(int)))
            out["baseline"] = baseline
            if pooled.ci_low.max() <= pooled.ci_high.min():
                out["text"] = f"their intervals against {baseline} all overlap: no rank is told apart from another"
            else:
                out["text"] = (f"r={rank_of[top]}'s interval against {baseline} lies wholly above r={rank_of[bottom]}'s; "
                               "ranks whose intervals overlap are not told apart")
            return out
    out["text"] = "there is no baseline run to give the ranks intervals, so they are not compared"
    return out


def step_time_words(ratio: float) -> str:
    """What a LoRA step's time against full fine-tuning's says, beyond the timing noise or not."""
    if ratio < 1 - TIMING_NOISE:
        return "the gradients and optimiser updates of the frozen weights were saved"
    if ratio > 1 + TIMING_NOISE:
        return "slower"
    return "no speed-up, as the original study found; the frozen encoder still runs the full forward and backward pass"


def lora_costs(top: pd.Series, full: pd.Series) -> dict:
    """The best LoRA variant's costs against full fine-tuning's: parameters, step time, memory, checkpoint."""
    step_ratio = top.step_time_ms / full.step_time_ms
    return {"params_pct_of_full": num(top.trainable_vs_full_percent, 2), "step_time": timing(step_ratio),
            "not_faster": bool(step_ratio >= 1 - TIMING_NOISE), "step_time_means": step_time_words(step_ratio),
            "memory_ratio": num(top.peak_memory_mb / full.peak_memory_mb, 2), "checkpoint_ratio": num(top.checkpoint_mb / full.checkpoint_mb, 3)}


def best_lora(lora: pd.DataFrame, diffs: pd.DataFrame, full: pd.Series | None) -> dict:
    """The LoRA variant with the highest validation AUC: its facts, comparisons, costs and latency."""
    top = best_row(lora)
    entry = {**_variant_facts(top), "rank": int(top["rank"]), "step_ms": num(top.step_time_ms, 1),
             "vs_full": comparison(diffs, top.variant, "full"), "vs_frozen": comparison(diffs, top.variant, "frozen")}
    if full is not None:
        entry["costs"] = lora_costs(top, full)
    merged, unmerged, base = top.latency_merged_ms, top.latency_unmerged_ms, top.latency_base_ms
    if not pd.isna(merged):
        entry["latency"] = {"base": num(base, 1), "unmerged": num(unmerged, 1), "merged": num(merged, 1),
                            "unmerged_vs_base": timing(unmerged / base), "merged_vs_base": timing(merged / base)}
    return entry


def analysis(summary: pd.DataFrame, diffs: pd.DataFrame) -> dict:
    """Findings stated on the analysis slides, each computed from the summary and the paired differences."""
    best = best_row(summary)
    out = {"best_variant": best.variant, "best_val_auc": num(best.val_auc)}
    baselines = {f: summary[summary.family == f].iloc[0] for f in BASELINES if (summary.family == f).any()}
    for family, row in baselines.items():
        out[family] = _variant_facts(row)
    out["comparisons"] = [c for v in summary.variant for b in BASELINES if v != b and (c := comparison(diffs, v, b)) is not None]
    # one row per variant, a column per baseline: the slide holds every variant of a study with several methods
    out["comparison_rows"] = [
        {"variant": v, **{b: next((c["text"] for c in out["comparisons"] if c["variant"] == v and c["baseline"] == b), "—") for b in BASELINES}}
        for v in summary.variant if any(c["variant"] == v for c in out["comparisons"])
    ]
    lora = summary[summary.family == "lora"]
    if len(lora):
        out["lora"] = best_lora(lora, diffs, baselines.get("full"))
    if sweep := rank_sweep(summary, diffs):
        out["ranks"] = sweep
    return out


def overhead(percent: float) -> str:
    return "n/a" if pd.isna(percent) else f"{percent:+.0f}%"


def latency_rows(latency: pd.DataFrame) -> dict:
    """The latency slide: one row per method that adds to the model, base / unmerged / merged ms (overhead) at each batch size.

    Variants that are the base architecture (full, frozen, partial) time the base only; they are named, not tabled.
    """
    def cell(ms, percent):
        return "—" if pd.isna(ms) else f"{ms:.2f} ({overhead(percent)})"

    added = latency[latency.unmerged_ms.notna()]
    batches = sorted(int(b) for b in added.batch.unique())
    rows = []
    for variant, group in added.groupby("variant", sort=False):
        by_batch = {int(r.batch): r for r in group.itertuples()}
        rows.append({"variant": variant, "cells": [
            part for b in batches for part in (
                (num(by_batch[b].base_ms, 2), cell(by_batch[b].unmerged_ms, by_batch[b].unmerged_overhead_percent),
                 cell(by_batch[b].merged_ms, by_batch[b].merged_overhead_percent)) if b in by_batch else ("n/a", "n/a", "n/a"))]})
    base_only = [v for v in dict.fromkeys(latency.variant) if v not in set(added.variant)]
    return {"batches": batches, "rows": rows, "base_only": base_only}


def _seen(seen: bool) -> str:
    return "confirmed" if seen else "not seen here"


def adapter_claim(latency: pd.DataFrame) -> dict | None:
    """Adapters add inference latency: confirmed when an adapter's batch-1 overhead over the base exceeds the timing noise."""
    adapters = latency[(latency.family == "adapter") & (latency.batch == 1)]
    if adapters.empty:
        return None
    worst = adapters.loc[adapters.unmerged_overhead_percent.idxmax()]
    big = latency[(latency.family == "adapter") & (latency.batch > 1)]
    return {
        "variant": worst.variant, "batch1": overhead(worst.unmerged_overhead_percent),
        "study_batch": int(big.batch.iloc[0]) if len(big) else None,
        "at_study_batch": overhead(big.set_index("variant").unmerged_overhead_percent.get(worst.variant, float("nan"))) if len(big) else None,
        "verdict": _seen(bool(worst.unmerged_overhead_percent > 100 * TIMING_NOISE)),
    }


def merged_lora_claim(latency: pd.DataFrame) -> dict | None:
    """Merged LoRA adds no latency: confirmed when its batch-1 overhead is within the timing noise."""
    merged = latency[(latency.batch == 1) & (latency.family == "lora") & latency.merged_ms.notna()]
    if merged.empty:
        return None
    row = merged.loc[merged.merged_overhead_percent.abs().idxmax()]
    return {"variant": row.variant, "batch1": overhead(row.merged_overhead_percent),
            "verdict": _seen(bool(abs(row.merged_overhead_percent) < 100 * TIMING_NOISE))}


def prompt_claim(summary: pd.DataFrame, context) -> dict | None:
    """Prompts reduce the available sequence length: confirmed when they took audio positions (30 s context);
    with clip context they lengthen the sequence instead."""
    prompts = summary[summary.family == "prompt"]
    if prompts.empty:
        return None
    longest = prompts.loc[prompts.prompt_length.idxmax()]
    frozen = summary[summary.family == "frozen"]
    length, positions = int(longest.prompt_length), num(longest.sequence_positions, 0)
    lost = bool(longest.audio_seconds_lost > 0)
    if lost:
        effect = f"take {length} of the encoder’s {positions} positions, {num(longest.audio_seconds_lost, 2)} s of audio"
    else:
        effect = f"lengthen the sequence to {positions} positions ({num(longest.sequence_audio_positions, 0)} of audio), no audio lost"
        if len(frozen):
            effect += f"; training step {timing(longest.step_time_ms / frozen.step_time_ms.iloc[0])} the frozen encoder’s"
    return {"variant": longest.variant, "length": length, "context": ", ".join(np.atleast_1d(context)), "effect": effect,
            "verdict": _seen(lost)}


def introduction_claims(summary: pd.DataFrame, latency: pd.DataFrame, context) -> dict:
    """The outline's claims about the other methods, each with this run's number and a verdict from the data."""
    claims = {"adapter": adapter_claim(latency), "lora_merged": merged_lora_claim(latency), "prompt": prompt_claim(summary, context)}
    return {name: claim for name, claim in claims.items() if claim is not None}


def snr_findings(auc_snr: pd.DataFrame, best_variant: str) -> dict | None:
    """The AUC of the lowest and highest injection-SNR bins for the best variant (mean over its seeds)."""
    rows = auc_snr[auc_snr.variant == best_variant]
    if rows.empty:
        return None
    bins = rows.groupby("snr_bin").agg(low=("snr_low", "first"), high=("snr_high", "first"), auc=("auc", "mean"))
    first, last = bins.iloc[0], bins.iloc[-1]
    return {"variant": best_variant, "bins": len(bins), "low_range": f"{first.low:.1f} to {first.high:.1f}", "low_auc": num(first.auc),
            "high_range": f"{last.low:.1f} to {last.high:.1f}", "high_auc": num(last.auc)}


def overrides(base, full):
    """The part of `full` that differs from `base` (a shifted test set's data, as its overrides)."""
    if isinstance(full, dict) and isinstance(base, dict):
        return {k: d for k, v in full.items() if (d := overrides(base.get(k), v)) not in (None, {})}
    return None if full == base else full


def _changed(base, full, prefix: str = "") -> list[str]:
    """The leaves where `full` differs from `base`, as "key.path value" (a test set's shift, in words)."""
    diff = overrides(base, full)
    if isinstance(diff, dict):
        return [c for k, v in diff.items() for c in _changed(base.get(k) if isinstance(base, dict) else None, full[k], f"{prefix}{k}.")]
    return [] if diff is None else [f"{prefix[:-1]} {full}"]


def against_full(higher: list[str], lower: list[str], unconverged: list[str] = ()) -> str:
    """The paired verdicts of one shifted test set against full fine-tuning, in one sentence."""
    groups = (("higher", higher), ("lower", lower), (f"{NOT_CONVERGED} (no verdict)", unconverged))
    parts = [f"{word} {', '.join(names)}; " for word, names in groups if names]
    return "".join(parts) + ("the other intervals cover zero." if parts else "every interval covers zero.")


def shift_findings(shift: pd.DataFrame, config: dict) -> list[dict]:
    """Per shifted test set: what it changes, which variant scores highest, and which variants differ from full
    fine-tuning on it by the paired intervals (never by point estimates); none without a shifted test set."""
    sets = []
    for name, rows in shift.groupby("test_set", sort=False):
        if name == IN_DISTRIBUTION:
            continue
        best = rows.loc[rows.auc.idxmax()] if rows.auc.notna().any() else rows.iloc[0]
        in_distribution = shift[(shift.test_set == IN_DISTRIBUTION) & (shift.variant == best.variant)].auc
        higher, lower, unconverged = (list(rows.variant[rows.verdict_vs_full == word]) for word in ("higher", "lower", NOT_CONVERGED))
        sets.append({
            "name": name,
            "changes": _changed(config["data"], config["evaluation"]["test_sets"].get(name, {})) or ["another data seed only"],
            "best": best.variant, "best_auc": num(best.auc), "best_in_distribution": num(in_distribution.iloc[0] if len(in_distribution) else None),
            "against_full": against_full(higher, lower, unconverged) if rows.verdict_vs_full.notna().any() else None,
            "at_chance": list(rows.variant[~rows.above_chance.astype(bool)]),  # 95% interval of the AUC covers 0.5
            "one_class": list(rows.variant[rows.one_class > 0]),
        })
    return sets


def not_learned(runs: pd.DataFrame) -> list[dict]:
    """The runs flagged by gwlora.train as not having learned, the selected-lr ones first, with the reason."""
    if "did_not_learn" not in runs:
        return []
    flagged = runs[runs.did_not_learn.astype(bool)].sort_values("selected", ascending=False, kind="stable")
    out = []
    for r in flagged.itertuples():
        reasons = [text for flag, text in (("val_loss_flat", "val loss flat"), ("test_one_class", "one class")) if getattr(r, flag, False) == True]  # noqa: E712 - numpy bools, NaN for none
        out.append({"run": f"{r.variant} lr {r.lr:g} seed {r.seed}", "selected": bool(r.selected), "because": ", ".join(reasons) or r.did_not_learn_because})
    return out


def lora_budget(variant: dict, base: dict) -> dict:
    """Trainable adapter parameters of a LoRA variant by the paper's count, r(d + k) per adapted d x k matrix."""
    d, ffn = base["d_model"], base["encoder_ffn_dim"]
    shapes = {name: (d, d) for name in ENCODER_LINEAR_MODULES[:4]} | {"fc1": (d, ffn), "fc2": (ffn, d)}
    r = int(variant["rank"])
    per_layer = sum(r * sum(shapes[m]) + (shapes[m][1] if variant["dora"] else 0) for m in variant["target_modules"])
    full = sum(shapes[m][0] * shapes[m][1] for m in variant["target_modules"])
    return {"per_layer": per_layer, "total": per_layer * base["encoder_layers"], "dense_per_layer": full}


def lora_budgets(summary: pd.DataFrame, study: dict) -> list[dict]:
    """Each LoRA variant's adapter budget by the paper's count beside the measured one (its trainable parameters minus the frozen run's)."""
    frozen = summary[summary.family == "frozen"]
    rows = []
    for v in summary[summary.family == "lora"].itertuples():
        variant = study["variants"][v.variant]
        measured = int(v.trainable_parameters - frozen.trainable_parameters.iloc[0]) if len(frozen) else None
        rows.append({"variant": v.variant, "targets": variant["target_modules"], "alpha": f"{variant['alpha']:g}",
                     "scaling": ("α/√r" if variant["rslora"] else "α/r") + (", DoRA" if variant["dora"] else ""),
                     "measured": "n/a" if measured is None else f"{measured:,}",
                     **{k: f"{n:,}" for k, n in lora_budget(variant, study["base_model"]).items()}})
    return rows


def context_words(context) -> str:
    """What the encoder's context is, in words: the clip's own length, a duration's padding, or a study axis."""
    if isinstance(context, list):
        return f"a study axis, {', '.join(context)} (positional embedding sliced to each)"
    seconds = context_seconds(context)
    if seconds is None:
        return "the clip's own length (positional embedding sliced)"
    if seconds == WHISPER_CHUNK_SECONDS:
        return f"{WHISPER_CHUNK_SECONDS} s of padding, as Whisper was trained"
    return f"{seconds:g} s of padding (positional embedding sliced to it)"


def schedule_words(schedule: dict) -> str:
    """The learning-rate schedule in words: its warm-up (steps or a fraction of the steps), then its shape."""
    if schedule.get("warmup_steps", 0) > 0:
        warmup = f"a linear warm-up over {schedule['warmup_steps']} steps, then "
    elif "warmup_steps" not in schedule and schedule.get("warmup_fraction", 0) > 0:
        warmup = f"a linear warm-up over {100 * schedule['warmup_fraction']:.1f}% of the steps, then "
    else:
        warmup = "no warm-up; "
    return warmup + ("a constant rate" if schedule["name"] == "constant" else f"{schedule['name']} decay to 0")


def seed_words(seeds: list) -> dict:
    """The words that follow the number of seeds: "1 seed" or "3 seeds", "mean over 3 seeds" or "the one seed's"."""
    n = len(seeds)
    return {"n": n, "count": f"{n} seed" if n == 1 else f"{n} seeds", "several": n > 1,
            "mean": "the one seed's" if n == 1 else f"mean over {n} seeds", "list": ", ".join(map(str, seeds))}


def edge_words(edge) -> str:
    """", at the lower edge" for a selected lr at the smallest of its grid ("upper": the largest), else nothing."""
    return f", at the {edge} edge" if isinstance(edge, str) and edge else ""


def setup(summary: pd.DataFrame, runs: pd.DataFrame, config: dict) -> dict:
    """The setup slides' words that depend on what ran: context, schedule, seeds, learning-rate selection, what trains."""
    several_lrs = bool((summary.lrs_tried > 1).any())
    return {
        "context": context_words(config["model"]["context"]),
        "schedule": schedule_words(config["train"]["schedule"]),
        "seeds": seed_words(sorted(int(s) for s in runs.seed.unique())),
        "lr_selected": several_lrs, "lr_heading": "learning rate (selected)" if several_lrs else "learning rate",
        "lr_selection": config["train"]["lr_selection"].replace("_", " "),
        "grid_edges": [f"{row['variant']} at lr {row['lr']:g}, the {row['lr_grid_edge']} edge of its grid: "
                       f"a {'lower' if row['lr_grid_edge'] == 'lower' else 'higher'} rate may do better"
                       for _, row in summary.iterrows() if isinstance(row.get("lr_grid_edge"), str) and row["lr_grid_edge"]],
        "variants": [{"variant": row["variant"], "what_trains": what_trains(row), "lr": f"{row['lr']:g}",
                      "tried": f" (of {int(row['lrs_tried'])} tried{edge_words(row.get('lr_grid_edge'))})" if row["lrs_tried"] > 1 else "",
                      "params": f"{int(row['trainable_parameters']):,}"} for _, row in summary.iterrows()],
    }


def findings(tables: dict[str, pd.DataFrame], study: dict, config: dict) -> dict:
    """Everything the deck states beyond the tables themselves, from the aggregate stage's tables (by file stem)."""
    optimal, tables = optimal_detector(tables), trained_only(tables)  # the optimal detector has a slide of its own
    summary = tables["summary"]
    best = best_row(summary).variant
    return {
        "setup": setup(summary, tables["runs"], config),
        "lora_budgets": lora_budgets(summary, study),
        "analysis": analysis(summary, tables["differences"]),
        "claims": introduction_claims(summary, tables["latency"], config["model"]["context"]),
        "paper_adapter_overhead": f"+{PAPER_ADAPTER_OVERHEAD[0]}% to +{PAPER_ADAPTER_OVERHEAD[1]}%",
        "timing_noise": f"±{TIMING_NOISE:.0%}",
        "latency": latency_rows(tables["latency"]),
        "snr": snr_findings(tables["auc_by_snr"], best),
        "shift": shift_findings(tables["shift"], config),
        "not_learned": not_learned(tables["runs"]),
        "methods_compared": bool(summary.family.isin(METHOD_FAMILIES[1:]).any()),
        "other_peft_methods": bool(summary.family.isin(("bitfit", "peft")).any()),
        "optimal_detector": optimal,
    }


# --------------------------------------------------------------------------- the optimal detector (train.variants.matched-filter)

EFFICIENCY_SNR = (8.0, 12.0)  # the SNR range whose efficiency the "Against the optimal detector" slide states


def trained_only(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """`tables` without the matched filter's rows: "best", "highest" and the methods' verdicts are about trained variants."""
    out = {}
    for name, frame in tables.items():
        keep = pd.Series(True, index=frame.index)
        for column in ("variant", "baseline"):
            if column in frame:
                keep &= frame[column] != MATCHED_FILTER
        out[name] = frame[keep].reset_index(drop=True)
    return out


def efficiency_in(eff: pd.DataFrame, variant: str) -> tuple[float, float, float] | None:
    """`variant`'s detection efficiency over the SNR bins of `eff` (weighted by their signals) and its 95% interval, or None."""
    from .aggregate import _binomial_interval

    rows = eff[eff.variant == variant]
    if rows.empty:
        return None
    n = int(rows.n_signal.sum())
    detected = float((rows.efficiency * rows.n_signal).sum())
    return (detected / n, *_binomial_interval(detected, n))


def efficiency_words(mine: tuple | None, search: tuple | None) -> str:
    """An efficiency and its interval, and how it stands against the matched filter's: only where the intervals part."""
    if mine is None:
        return "n/a"
    text = f"{mine[0]:.2f} (95% CI {mine[1]:.2f} to {mine[2]:.2f})"
    if search is None:
        return text
    if mine[2] < search[1]:
        return f"{text}, below the matched filter's {search[0]:.2f}"
    if mine[1] > search[2]:
        return f"{text}, above the matched filter's {search[0]:.2f}"
    return f"{text}, not told apart from the matched filter's {search[0]:.2f} by their intervals"


def optimal_detector(tables: dict[str, pd.DataFrame]) -> dict | None:
    """The "Against the optimal detector" slide: the bank, its test AUC, each trained variant's paired test-AUC
    difference against it and its efficiency at SNR 8-12 against the search's and the oracle's; None without one."""
    summary = tables["summary"]
    own = summary[summary.family == MATCHED_FILTER]
    if own.empty:
        return None
    search = own.iloc[0]
    eff = tables["efficiency"]
    low, high = EFFICIENCY_SNR
    window = eff[(eff.test_set == IN_DISTRIBUTION) & eff.snr_median.between(low, high)]
    found = efficiency_in(window, MATCHED_FILTER)
    oracle = window[window.variant == MATCHED_FILTER]
    rows = []
    for variant in summary.variant[summary.family != MATCHED_FILTER]:
        c = comparison(tables["differences"], variant, MATCHED_FILTER)
        rows.append({"variant": variant, "auc": c["text"] if c else "n/a", "efficiency": efficiency_words(efficiency_in(window, variant), found)})
    shift = tables.get("shift", pd.DataFrame())
    beyond = shift[(shift.variant == MATCHED_FILTER) & (shift.outside_bank > 0)] if "outside_bank" in shift else shift.iloc[:0]
    return {
        "bank_size": f"{int(search.bank_size)}", "minimal_match": f"{search.minimal_match:g}", "windows_per_s": f"{search.windows_per_s:.1f}",
        "test_auc": num(search.test_auc), "snr_range": f"{low:g}–{high:g}",
        "search_efficiency": efficiency_words(found, None),
        "oracle": "n/a" if oracle.empty or "oracle_efficiency" not in oracle else
                  f"{float((oracle.oracle_efficiency * oracle.n_signal).sum() / oracle.n_signal.sum()):.2f}",
        "rows": rows,
        "outside_bank": [f"{row.test_set}: {100 * row.outside_bank:.0f}% of its injections" for row in beyond.itertuples()],
    }


def _plain(value):
    """numpy scalars as Python ones, for JSON."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"findings: {type(value).__name__} {value!r} is not JSON data")


def write_findings(path: str | Path, found: dict) -> None:
    """`found` as JSON at `path`, atomically (a reader sees the old file or the whole new one)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(found, indent=2, default=_plain) + "\n")
