import json
import shlex


def as_json(obj):
    """Config sections reach the stages as JSON through params, so a change re-runs exactly what depends on it."""
    return json.dumps(obj)


def train_settings():
    """The `train` section without the variant list: each job gets its own variant."""
    return {k: v for k, v in config["train"].items() if k not in ("variants", "seeds")}


def parent_of(name, index=0):
    """Params helper: the directory of an input, as a function of the job's input (lint-clean, no hardcoded prefix)."""
    return lambda wildcards, input: str(Path(input[name][index]).parent)


def strain_manifest(wildcards):
    """The dataset rule's download input: the GWOSC manifest, or nothing for simulated noise."""
    return [GWOSC_MANIFEST] if config["data"]["source"] == "gwosc" else []


def figure_names():
    """The figures the plot stage draws for this config (see gwlora.plot)."""
    names = ["example_inputs", "val_auc_vs_time", "val_loss_vs_time", "test_auc_vs_parameters", "costs"]
    if any(v.family == "lora" for v in VARIANTS.values()):
        names.append("val_auc_vs_rank")
        if config["train"]["latency_batches"] > 0:
            names.append("latency")
    if config["data"]["source"] in INJECTION_SOURCES:
        names.append("auc_vs_snr")
    return names
