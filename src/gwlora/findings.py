"""The study's findings as data: every verdict, ratio, claim, budget and flag the deck states.

The aggregate stage computes them from its own tables and writes them to
``tables/findings.json`` (:func:`write_findings`); the deck stage reads that
file and its template only prints (loops and values, no thresholds). Comparative
words ("higher", "lower", "indistinguishable") come from the 95% intervals of
the paired bootstrap, never from the sign of a point estimate. The verdict rules
are stated once here: a run that did not learn, or a variant whose selected runs
did not learn, is never ranked (:func:`ranked`); the configured
``train.lr_selection`` metric picks "best" as it picks learning rates
(:data:`SELECTION`); a timing difference is stated only where the two sides'
repetitions do not overlap (:func:`separation`), else it is "not resolved by
these timings".
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
# What "best" means: train.lr_selection -> (summary column, whether higher is better, words); the lrs are picked the same way
SELECTION = {"val_loss": ("best_val_loss", False, "lowest validation loss"), "val_auc": ("val_auc", True, "highest validation AUC")}
NOT_RESOLVED = "not resolved by these timings"
# The noise rule the deck states: timings are told apart only where at least MIN_REPETITIONS repetitions a side do not
# overlap. Two sides drawn from the same noise fail to overlap by chance with probability 2 / C(n + m, n) (chance_apart):
# 1 in 3 for 2 seeds against 2, so 2 a side is no finding; 1 in 10 for 3 against 3, 1 in 35 for 4 against 4.
MIN_REPETITIONS = 3
TIMING_RULE = ("a timing difference is stated only where the two sides' repetitions do not overlap (step times: the range over "
               f"at least {MIN_REPETITIONS} seeds a side, which pure noise parts 1 time in 10 at 3 against 3 and 1 in 3 at 2 against 2; "
               "latency: the quartiles of each run's repeated passes, in every run); otherwise it is " + NOT_RESOLVED)
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


def separation(a_low, a_high, b_low, b_high) -> int:
    """+1 when side a's range lies wholly above side b's, -1 wholly below, 0 when they overlap or a bound is missing."""
    bounds = np.array([a_low, a_high, b_low, b_high], dtype=float)
    if np.isnan(bounds).any():
        return 0
    return 1 if bounds[0] > bounds[3] else -1 if bounds[1] < bounds[2] else 0


def chance_apart(n: int, m: int) -> float:
    """How often `n` and `m` repetitions of the same noise fall wholly apart, one side above the other: 2 / C(n + m, n)."""
    from math import comb

    return 2 / comb(n + m, n)


def seed_separation(a, b) -> int:
    """:func:`separation` of two sides' repeated timings (one per seed): their ranges, with at least :data:`MIN_REPETITIONS`
    a side (2 against 2 part by chance 1 time in 3, :func:`chance_apart`), never a single timing per side."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if min(len(a), len(b)) < MIN_REPETITIONS:
        return 0  # too few timings a side: noise alone would part them too often
    return separation(a.min(), a.max(), b.min(), b.max())


def timing(ratio: float, side: int, of: str) -> str:
    """A cost ratio as a phrase that ends where a sentence may go on: "0.93× that of full fine-tuning", followed by
    ", not resolved by these timings" unless the repetitions separate the sides (`of`: what the ratio is of)."""
    if pd.isna(ratio):
        return f"n/a (no timing of {of.removeprefix('that of ')})"
    return f"{ratio:.2f}× {of}" + ("" if side else f", {NOT_RESOLVED}")


def comparison(diffs: pd.DataFrame, variant: str, baseline: str) -> dict | None:
    """The pooled paired test-AUC difference of `variant` against `baseline`, in the words the intervals allow."""
    pooled = pooled_differences(diffs, baseline)
    if variant not in pooled.index:
        return None
    row = pooled.loc[variant]
    # differences.csv read back from disk holds NaN, not "", where both sides converged
    unconverged = row.get("unconverged") if isinstance(row.get("unconverged"), str) else ""
    return {"variant": variant, "baseline": baseline, "verdict": row.verdict,
            "text": describe(row.delta, row.ci_low, row.ci_high, unconverged=unconverged), "unconverged": unconverged,
            "seeds": int(row.n_seeds), "seed_sd": num(row.seed_sd)}


def _variant_facts(row: pd.Series) -> dict:
    return {"variant": row.variant, "val_auc": num(row.val_auc), "val_loss": num(row.best_val_loss), "test_auc": num(row.test_auc),
            "params": f"{int(row.trainable_parameters):,}", "lr": f"{row.lr:g}", "checkpoint_mib": num(row.checkpoint_mb, 2)}


def ranked(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows that may be called best, highest or lead anything: variants none of whose selected runs was flagged as not learning."""
    if "did_not_learn" not in rows:
        return rows
    return rows[pd.to_numeric(rows.did_not_learn, errors="coerce").fillna(0).astype(float) == 0]


def best_row(rows: pd.DataFrame, selection: str = "val_loss") -> pd.Series | None:
    """The row that ranks first by the configured lr-selection metric (:data:`SELECTION`) among rows that learned; None when none did."""
    column, higher, _ = SELECTION[selection]
    rows = ranked(rows)
    rows = rows[rows[column].notna()]
    if rows.empty:
        return None
    return rows.loc[rows[column].idxmax() if higher else rows[column].idxmin()]


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


def selected_runs(runs: pd.DataFrame, variant: str) -> pd.DataFrame:
    """The runs of `variant` at its selected lr (every run when the table has no selection)."""
    rows = runs[runs.variant == variant]
    return rows[rows.selected.astype(bool)] if "selected" in rows else rows


# A run that trained on cached encoder outputs (gwlora.encoder_cache: the frozen encoder, partial fine-tuning's frozen
# layers) skips that part of the step: its step time is not the same measurement as an uncached run's
CACHED_STEP = "trained on cached encoder outputs (its step skips the frozen encoder)"


def cached(runs: pd.DataFrame, variant: str) -> bool:
    """Whether any selected run of `variant` trained on cached encoder outputs (false for a table without the record)."""
    rows = selected_runs(runs, variant)
    return "encoder_cache_used" in rows and bool(rows.encoder_cache_used.fillna(False).astype(bool).any())


def step_separation(runs: pd.DataFrame, variant: str, reference: str) -> int:
    """Whether `variant`'s per-seed step times lie wholly above (+1) or below (-1) `reference`'s, else 0."""
    return seed_separation(selected_runs(runs, variant).step_time_ms, selected_runs(runs, reference).step_time_ms)


def step_time_words(side: int, seeds: int) -> str:
    """What a LoRA step's time against full fine-tuning's says: only what the repeated (per-seed) timings separate."""
    if side < 0:
        return "faster in every seed than full fine-tuning in any (the frozen weights need no gradients or optimiser updates)"
    if side > 0:
        return "slower in every seed than full fine-tuning in any"
    if seeds < 2:
        return f"a difference {NOT_RESOLVED} (one timing per side says nothing of how much a timing varies)"
    if seeds < MIN_REPETITIONS:
        return (f"a difference {NOT_RESOLVED} ({seeds} timings a side, which noise alone would part 1 time in "
                f"{round(1 / chance_apart(seeds, seeds))}; {MIN_REPETITIONS} a side are needed)")
    return f"a difference {NOT_RESOLVED} (the seeds' step times of the two overlap)"


def lora_costs(top: pd.Series, full: pd.Series, runs: pd.DataFrame) -> dict:
    """The best LoRA variant's costs against full fine-tuning's: parameters, step time, memory, checkpoint."""
    step_ratio = top.step_time_ms / full.step_time_ms
    side = step_separation(runs, top.variant, full.variant)
    seeds = min(len(selected_runs(runs, top.variant)), len(selected_runs(runs, full.variant)))
    step_time, means = timing(step_ratio, side, "that of full fine-tuning"), step_time_words(side, seeds)
    if any(cached(runs, v) for v in (top.variant, full.variant)):
        step_ratio, side = float("nan"), 0
        step_time = means = f"not compared with full fine-tuning's: a side {CACHED_STEP}"
    return {"params_pct_of_full": num(top.trainable_vs_full_percent, 2), "step_time": step_time,
            "step_ratio": "n/a" if pd.isna(step_ratio) else f"{step_ratio:.2f}×",
            "not_faster": side > 0, "step_time_means": means,
            "memory_ratio": num(top.peak_memory_mb / full.peak_memory_mb, 2), "checkpoint_ratio": num(top.checkpoint_mb / full.checkpoint_mb, 3)}


def latency_separation(runs: pd.DataFrame, variant: str, mode: str, batch1: bool = False) -> int:
    """Whether `mode`'s repeated passes (their quartiles) lie above (+1) or below (-1) the base's in every selected run of `variant`."""
    suffix = "_b1" if batch1 else ""
    columns = [f"latency_{m}{suffix}_{q}_ms" for m in (mode, "base") for q in ("q25", "q75")]
    rows = selected_runs(runs, variant)
    if rows.empty or not set(columns) <= set(rows):
        return 0  # repetitions not recorded (a run of an earlier version): nothing to judge by
    sides = {separation(*(getattr(r, c) for c in columns)) for r in rows.itertuples()}
    return sides.pop() if len(sides) == 1 else 0


def best_lora(lora: pd.DataFrame, diffs: pd.DataFrame, full: pd.Series | None, runs: pd.DataFrame, selection: str) -> dict | None:
    """The LoRA variant that ranks first by `selection` among those that learned: its facts, comparisons, costs and latency."""
    top = best_row(lora, selection)
    if top is None:
        return None
    entry = {**_variant_facts(top), "rank": int(top["rank"]), "step_ms": num(top.step_time_ms, 1),
             "vs_full": comparison(diffs, top.variant, "full"), "vs_frozen": comparison(diffs, top.variant, "frozen")}
    if full is not None:
        entry["costs"] = lora_costs(top, full, runs)
    merged, unmerged, base = top.latency_merged_ms, top.latency_unmerged_ms, top.latency_base_ms
    if not pd.isna(merged):
        entry["latency"] = {"base": num(base, 1), "unmerged": num(unmerged, 1), "merged": num(merged, 1),
                            "unmerged_vs_base": timing(unmerged / base, latency_separation(runs, top.variant, "unmerged"), "the base's"),
                            "merged_vs_base": timing(merged / base, latency_separation(runs, top.variant, "merged"), "the base's")}
    return entry


def analysis(summary: pd.DataFrame, diffs: pd.DataFrame, runs: pd.DataFrame | None = None, selection: str = "val_loss") -> dict:
    """Findings stated on the analysis slides, each computed from the summary, the runs (their repeated timings; none:
    no timing is resolved) and the paired differences; "best" is by `selection`, the configured ``train.lr_selection``."""
    runs = pd.DataFrame(columns=["variant", "selected", "step_time_ms"]) if runs is None else runs
    column, _, words = SELECTION[selection]
    best = best_row(summary, selection)
    out = {"best_by": words, "best_variant": None if best is None else best.variant,
           "best_value": None if best is None else num(best[column]),
           "not_ranked": [v for v in summary.variant if v not in set(ranked(summary).variant)]}
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
    if len(lora) and (entry := best_lora(lora, diffs, baselines.get("full"), runs, selection)) is not None:
        out["lora"] = entry
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


def _verdict(side: int, seen: int) -> str:
    """A claim's verdict from the repetitions: "confirmed" when they separate the sides the claim's way (`seen`), "not seen here" the other way."""
    return NOT_RESOLVED if side == 0 else "confirmed" if side == seen else "not seen here"


def adapter_claim(latency: pd.DataFrame, runs: pd.DataFrame) -> dict | None:
    """Adapters add inference latency: confirmed when an adapter's batch-1 passes lie above its base's in every run."""
    adapters = latency[(latency.family == "adapter") & (latency.batch == 1)]
    if adapters.empty:
        return None
    worst = adapters.loc[adapters.unmerged_overhead_percent.idxmax()]
    big = latency[(latency.family == "adapter") & (latency.batch > 1)]
    return {
        "variant": worst.variant, "batch1": overhead(worst.unmerged_overhead_percent),
        "study_batch": int(big.batch.iloc[0]) if len(big) else None,
        "at_study_batch": overhead(big.set_index("variant").unmerged_overhead_percent.get(worst.variant, float("nan"))) if len(big) else None,
        "verdict": _verdict(latency_separation(runs, worst.variant, "unmerged", batch1=True), seen=1),
    }


def merged_lora_claim(latency: pd.DataFrame, runs: pd.DataFrame) -> dict | None:
    """Merged LoRA adds no latency: "not seen here" when a merged LoRA's batch-1 passes lie above its base's in every run,
    "confirmed" when below, else not resolved (the repetitions do not tell merged and base apart)."""
    merged = latency[(latency.batch == 1) & (latency.family == "lora") & latency.merged_ms.notna()]
    if merged.empty:
        return None
    row = merged.loc[merged.merged_overhead_percent.idxmax()]
    return {"variant": row.variant, "batch1": overhead(row.merged_overhead_percent),
            "verdict": _verdict(latency_separation(runs, row.variant, "merged", batch1=True), seen=-1)}


def prompt_claim(summary: pd.DataFrame, runs: pd.DataFrame, context) -> dict | None:
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
        if len(frozen) and cached(runs, frozen.variant.iloc[0]):
            effect += f"; its training step is not set against the frozen encoder’s, which {CACHED_STEP}"
        elif len(frozen):
            side = step_separation(runs, longest.variant, frozen.variant.iloc[0])
            effect += f"; training step {timing(longest.step_time_ms / frozen.step_time_ms.iloc[0], side, 'the frozen encoder’s')}"
    return {"variant": longest.variant, "length": length, "context": ", ".join(np.atleast_1d(context)), "effect": effect,
            "verdict": "confirmed" if lost else "not seen here"}


def introduction_claims(summary: pd.DataFrame, latency: pd.DataFrame, runs: pd.DataFrame, context) -> dict:
    """The outline's claims about the other methods, each with this run's number and a verdict from the data."""
    claims = {"adapter": adapter_claim(latency, runs), "lora_merged": merged_lora_claim(latency, runs),
              "prompt": prompt_claim(summary, runs, context)}
    return {name: claim for name, claim in claims.items() if claim is not None}


def snr_findings(auc_snr: pd.DataFrame, best_variant: str | None) -> dict | None:
    """The AUC of the lowest and highest injection-SNR bins for the best variant (mean over its seeds); None without one."""
    rows = auc_snr[auc_snr.variant == best_variant]
    if best_variant is None or rows.empty:
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


def shift_words(base: dict, test_set: dict) -> list[str]:
    """What a shifted test set changes, in plain words: "quieter signals, SNR 4–8 (training 8–20)", else each changed key and value."""
    diff = overrides(base, test_set) or {}
    words = []
    if isinstance(diff.get("snr"), dict) and isinstance(base.get("snr"), dict):
        trained = base["snr"]
        low, high = diff["snr"].get("min", trained["min"]), diff["snr"].get("max", trained["max"])
        centre, trained_centre = low + high, trained["min"] + trained["max"]
        which = "quieter signals" if centre < trained_centre else "louder signals" if centre > trained_centre else "signals"
        words.append(f"{which}, SNR {low:g}–{high:g} (training {trained['min']:g}–{trained['max']:g})")
        rest = {k: v for k, v in diff["snr"].items() if k not in ("min", "max")}
        diff = {k: v for k, v in diff.items() if k != "snr"} | ({"snr": rest} if rest else {})
    words += [change.replace("_", " ") for change in _changed(base, {**base, **diff})]
    return words


def shift_findings(shift: pd.DataFrame, config: dict) -> list[dict]:
    """Per shifted test set: what it changes, which variant that learned scores highest (none where every one's AUC
    interval covers chance), and which variants differ from full fine-tuning on it by the paired intervals (never by
    point estimates); none without a shifted test set."""
    sets = []
    for name, rows in shift.groupby("test_set", sort=False):
        if name == IN_DISTRIBUTION:
            continue
        learned = ranked(rows)
        # "highest" only where some variant that learned is told apart from chance (its AUC's interval above 0.5)
        chance_only = bool(len(learned)) and not learned.above_chance.astype(bool).any()
        best = learned.loc[learned.auc.idxmax()] if learned.auc.notna().any() and not chance_only else None
        in_distribution = shift[(shift.test_set == IN_DISTRIBUTION) & (shift.variant == (None if best is None else best.variant))].auc
        higher, lower, unconverged = (list(rows.variant[rows.verdict_vs_full == word]) for word in ("higher", "lower", NOT_CONVERGED))
        sets.append({
            "name": name,
            "changes": shift_words(config["data"], config["evaluation"]["test_sets"].get(name, {})) or ["another data seed only"],
            "best": None if best is None else best.variant, "best_auc": None if best is None else num(best.auc),
            "chance_only": chance_only,
            "best_in_distribution": num(in_distribution.iloc[0] if len(in_distribution) else None),
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
    """The words that follow the number of seeds: "1 seed" or "3 seeds", "mean over 3 seeds" or "the one seed's", and
    what a validation metric that picks a learning rate is taken over ("one seed", "the mean over 3 seeds"), and what a
    paired interval is (a bootstrap over the test windows; with several seeds, widened by their spread: gwlora.compare)."""
    n = len(seeds)
    return {"n": n, "count": f"{n} seed" if n == 1 else f"{n} seeds", "several": n > 1,
            "mean": "the one seed's" if n == 1 else f"mean over {n} seeds", "list": ", ".join(map(str, seeds)),
            "over": "one seed" if n == 1 else f"the mean over {n} seeds",
            "interval": "a paired bootstrap over windows" if n == 1 else "a paired bootstrap over windows, widened by the seeds' spread"}


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


def counts(summary: pd.DataFrame, runs: pd.DataFrame) -> dict:
    """The words that follow the counts of trained variants and runs (the matched filter trains nothing: not counted):
    variants, variants beyond the baselines (the ways of adapting), the baselines by name, runs as variant–lr pairs × seeds."""
    pairs = runs.groupby(["variant", "lr"]).ngroups
    seeds = runs.seed.nunique()
    pair_words = f"{pairs} variant–learning-rate pair{'s' if pairs != 1 else ''}" if pairs != len(summary) else f"{pairs} variant{'s' if pairs != 1 else ''}"
    baselines = [words for family, words in (("full", "full fine-tuning"), ("frozen", "the frozen encoder")) if (summary.family == family).any()]
    return {"variants": len(summary), "adapted": int((~summary.family.isin(BASELINES)).sum()), "runs": len(runs),
            "baselines": " and ".join(baselines),
            "provenance": f"{len(runs)} training run{'s' if len(runs) != 1 else ''} ({pair_words} × {seeds} seed{'s' if seeds != 1 else ''})"}


def findings(tables: dict[str, pd.DataFrame], study: dict, config: dict) -> dict:
    """Everything the deck states beyond the tables themselves, from the aggregate stage's tables (by file stem)."""
    optimal, tables = optimal_detector(tables), trained_only(tables)  # the optimal detector has a slide of its own
    summary, runs = tables["summary"], tables["runs"]
    selection = config["train"]["lr_selection"]
    found = analysis(summary, tables["differences"], runs, selection)
    return {
        "setup": setup(summary, runs, config),
        "counts": counts(summary, runs),
        "lora_budgets": lora_budgets(summary, study),
        "analysis": found,
        "claims": introduction_claims(summary, tables["latency"], runs, config["model"]["context"]),
        "paper_adapter_overhead": f"+{PAPER_ADAPTER_OVERHEAD[0]}% to +{PAPER_ADAPTER_OVERHEAD[1]}%",
        "timing_rule": TIMING_RULE,
        "latency": latency_rows(tables["latency"]),
        "snr": snr_findings(tables["auc_by_snr"], found["best_variant"]),
        "shift": shift_findings(tables["shift"], config),
        "not_learned": not_learned(runs),
        "cached_steps": [v for v in summary.variant if cached(runs, v)], "cached_step_words": CACHED_STEP,
        "methods_compared": bool(summary.family.isin(METHOD_FAMILIES[1:]).any()),
        "other_peft_methods": bool(summary.family.isin(("bitfit", "peft")).any()),
        "optimal_detector": optimal,
    }


# --------------------------------------------------------------------------- the optimal detector (train.variants.matched-filter)

# The "Against the optimal detector" slide states the efficiency over efficiency.csv's SNR bins whose median lies in this
# range; its words name those bins' own edges (the bins hold equal counts of signals, so the edges move with the data)
EFFICIENCY_SNR = (8.0, 12.0)


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
    """`variant`'s detection efficiency over the SNR bins of `eff` (weighted by their signals, the mean over seeds) and
    its 95% interval, or None. The interval is the envelope aggregate's rows use: from the exact interval of the fewest
    signals any seed detected to that of the most (one seed: its own exact interval), never of a count averaged over seeds."""
    from .aggregate import _binomial_interval

    rows = eff[eff.variant == variant]
    if rows.empty:
        return None
    n = int(rows.n_signal.sum())
    # a table without the seeds' spread is one seed's: its efficiency is that seed's fraction
    fewest, most = (int(round(float((rows.get(column, rows.efficiency) * rows.n_signal).sum()))) for column in ("seed_min", "seed_max"))
    return (float((rows.efficiency * rows.n_signal).sum()) / n, _binomial_interval(fewest, n)[0], _binomial_interval(most, n)[1])


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


def snr_range(window: pd.DataFrame, low: float, high: float) -> str:
    """The SNR range an efficiency over `window`'s bins covers: from its lowest bin's lower edge to its highest bin's
    upper edge ("8.0–12.6"); `low`–`high` where no bin's median falls in that range."""
    if window.empty:
        return f"{low:g}–{high:g}"
    return f"{window.snr_low.min():.1f}–{window.snr_high.max():.1f}"


def optimal_detector(tables: dict[str, pd.DataFrame]) -> dict | None:
    """The "Against the optimal detector" slide: the bank, its test AUC, each trained variant's paired test-AUC
    difference against it and its efficiency at SNR about 8-12 (the bins of EFFICIENCY_SNR, named by their own edges)
    against the search's and the oracle's; None without one."""
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
        "test_auc": num(search.test_auc), "snr_range": snr_range(window, low, high),
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
