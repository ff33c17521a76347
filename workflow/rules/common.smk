import json
import shlex

from gwlora import gpus
from gwlora import resources as estimate
from gwlora.cache_points import CACHED_SPLITS, variant_cache_point
from gwlora.cli import read_json
from gwlora.config import SHIFT_PREFIX, run_model_config, split_source
from gwlora.plot import figure_names as plot_figure_names
from gwlora.run_state import train_stage_settings

# The `gpu` resource of a training job: 1 where it trains on a GPU, 0 on the CPU
# (train.device cpu, or auto on a machine without one). The default profile caps
# the total at one GPU; a cluster profile asks for one per job (profiles/*/config.yaml).
TRAIN_GPUS = gpus.requested(config["train"]["device"])


def as_json(obj):
    """Config sections reach the stages as JSON through params, so a change re-runs exactly what depends on it."""
    return json.dumps(obj)


def parent_of(name, index=0):
    """Params helper: the directory of an input, as a function of the job's input (lint-clean, no hardcoded prefix)."""
    return lambda wildcards, input: str(Path(input[name][index]).parent)


# GWOSC downloads are cached across experiments; each experiment lists its files in a manifest of its
# own, and each shifted test set with GWOSC noise in one more (manifest-<experiment>.shift-<name>.json)
GWOSC_MANIFEST = "resources/gwosc/manifest-{manifest}.json"


def manifest_name(split):
    """The manifest that lists a split's GWOSC files: the experiment's, or its shifted test set's."""
    return config["experiment"] + ("" if split in SPLITS else f".{split}")


def manifest_data(wildcards):
    """The `data` section whose GWOSC files the download rule fetches for manifest `wildcards.manifest`."""
    split = wildcards.manifest.removeprefix(config["experiment"]).removeprefix(".") or SPLITS[0]
    return split_source(config, split)[0]


def strain_manifest(wildcards):
    """The dataset rule's download input: the GWOSC manifest of the split's data, or nothing for other sources."""
    data = split_source(config, wildcards.split)[0]
    return [GWOSC_MANIFEST.format(manifest=manifest_name(wildcards.split))] if data["source"] == "gwosc" else []


def split_data(wildcards):
    """The dataset rule's params: the split's data section, data seed, the split it builds and its test set option."""
    data, seed, split = split_source(config, wildcards.split)
    test_set = "" if wildcards.split in SPLITS else f"--test-set {wildcards.split.removeprefix(SHIFT_PREFIX)}"
    return {"data": as_json(data), "seed": seed, "split": split, "test_set": test_set}


def figure_names():
    """The figures the plot stage draws for this config: gwlora.plot.figure_names decides, for the rule's outputs and its --figures."""
    return plot_figure_names(config)


def per_run(estimate_of):
    """A resources callable (train): the gwlora.resources estimate for the job's run (its context, its cache), larger on each retry."""
    return lambda wildcards, attempt: estimate_of(config, attempt=attempt, variant=RUN_VARIANTS[wildcards.variant])


def per_split(estimate_of):
    """A resources callable (dataset, features): the estimate for the job's split, larger on each retry."""
    return lambda wildcards, attempt: estimate_of(config, wildcards.split, attempt=attempt)


# The encoder_outputs rule's caches: what a frozen encoder prefix makes of a split (gwlora.encoder_cache)
ENCODER_OUTPUTS = f"{RESULTS}/encoder_outputs/{{context}}/{{point}}/{{split}}"


def encoder_cache_inputs(wildcards):
    """The train rule's cached encoder outputs (train and val): a frozen or partial variant's under train.encoder_cache auto, else none.

    One cache per (context, cache point, split), so every lr and seed of a variant, and every variant with the same frozen prefix, shares it.
    """
    variant = RUN_VARIANTS[wildcards.variant]
    point = variant_cache_point(config["train"], variant)
    if point is None:
        return {}
    context = run_model_config(config["model"], variant)["context"]
    return {f"{split}_encoder_outputs": ENCODER_OUTPUTS.format(context=context, point=point, split=split) for split in CACHED_SPLITS}


def encoder_cache_args(wildcards, input):
    """The train stage's --train-encoder-outputs and --val-encoder-outputs, where the job has them."""
    return "".join(f" --{split}-encoder-outputs {shlex.quote(input[f'{split}_encoder_outputs'])}"
                   for split in CACHED_SPLITS if f"{split}_encoder_outputs" in input.keys())


# --- train.lr_search (workflow/rules/lr_search.smk): the rounds decided so far and the runs they add

RUN_OF = {(v.name, v.lr): run for run, v in RUN_VARIANTS.items()}  # (variant name, lr) -> run id


def decided(search, round):
    """Round `round`'s decision for variant `search` (a checkpoint: Snakemake runs it first when it is not decided)."""
    return read_json(checkpoints.lr_search.get(search=search, round=round).output.decision)


def searched_lrs(search, rounds):
    """The rates of variant `search` tried before round `rounds`: its grid, then the rate each earlier round added."""
    return [*LR_GRIDS[search], *(lr for k in range(rounds) for lr in decided(search, k)["train"])]


def final_lrs(search):
    """Every rate of variant `search` once its search ends: the first round that adds nothing lists them."""
    for k in range(2 * LR_SEARCH["max_extensions"] + 1):  # each round but the last adds one rate, at most max_extensions an edge
        decision = decided(search, k)
        if not decision["train"]:
            return decision["tried"]
    raise WorkflowError(f"lr search of {search}: still adding rates after {k + 1} rounds; delete {RESULTS}/lr_search/{search}")


def added_run_files(search):
    """The files of every run the search of variant `search` added: each seed's summary and predictions, and its shifted test sets' scores."""
    added = [RUN_OF[search, lr] for lr in sorted(set(final_lrs(search)) - set(LR_GRIDS[search]))]
    return [*expand([rules.train.output.summary, rules.train.output.predictions], variant=added, seed=SEEDS),
            *expand(rules.evaluate_extension.output.metrics, variant=added, seed=SEEDS, test_set=TEST_SETS)]


def lr_search_inputs():
    """The aggregate rule's inputs of the lr searches, one item a variant, so that each search's checkpoints advance on their own
    (Snakemake stops an input function at its first undecided checkpoint; one function for all would search one variant at a time)."""
    if not LR_SEARCH["extend"]:
        return {}
    return {f"lr_search_{i}": (lambda wildcards, search=search: added_run_files(search)) for i, search in enumerate(LR_GRIDS)}


def added_summaries(input):
    """The summary.json files among the aggregate job's lr-search inputs."""
    return [p for key, files in input.items() if key.startswith("lr_search_") for p in files if Path(p).name == "summary.json"]
