import json

from gwlora import gpus
from gwlora import resources as estimate
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
    """A resources callable (train): the gwlora.resources estimate for the job's run (its context), larger on each retry."""
    return lambda wildcards, attempt: estimate_of(config, attempt=attempt, context=RUN_VARIANTS[wildcards.variant].context)


def per_split(estimate_of):
    """A resources callable (dataset, features): the estimate for the job's split, larger on each retry."""
    return lambda wildcards, attempt: estimate_of(config, wildcards.split, attempt=attempt)
