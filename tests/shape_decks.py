"""Decks of a config's shape, built from made-up run records (no training): aggregate, plot and deck run on them as
the workflow would. Shared by the deck-shape, slide-walk and PowerPoint tests."""

from __future__ import annotations

import copy
import json

import numpy as np
import yaml

from conftest import REPO, SCHEMA, tiny_config, write_toy_features
from run_fixtures import fake_run
from gwlora import aggregate as aggregate_stage
from gwlora.aggregate import aggregate
from gwlora.config import expand_variants, validate
from gwlora.constants import SPLITS
from gwlora.deck import build_deck
from gwlora.plot import figure_names, make_figures
from gwlora.families import family_of_key
from gwlora.families.matched_filter import matched_filter_variant


def study_inputs(root, config):
    """The base model record and the data splits' build records the aggregate stage reads."""
    audio = config["data"]["source"] == "audiofolder"
    model = root / "base_model"
    model.mkdir()
    (model / "base_model.json").write_text(json.dumps({"source": "random-init", "random_init": True, "seed": 0, "d_model": 32,
                                                       "encoder_layers": 2, "encoder_attention_heads": 4, "num_mel_bins": 80,
                                                       "encoder_parameters": 75_904}))
    (model / "config.json").write_text(json.dumps({"encoder_ffn_dim": 64}))
    data = []
    for split in SPLITS:
        d = root / "data" / split
        d.mkdir(parents=True)
        build = {"split": split, "source": config["data"]["source"], "n_windows": 40, "n_signal": 20,
                 "detectors": ["audio"] if audio else ["H1", "L1"]}
        if audio:
            build["label_names"] = {"0": "no", "1": "yes"}
        (d / "build.json").write_text(json.dumps(build))
        data.append(d)
    return model, data


def demo_config() -> dict:
    """config/demo.yaml as it is, validated: every variant and shifted test set the demo deck shows."""
    return validate(yaml.safe_load((REPO / "config" / "demo.yaml").read_text()), copy.deepcopy(SCHEMA))


def widest_config() -> dict:
    """Wider tables than any config in the repo makes: config/tiny-en.yaml's variants, seeds and test sets, with the
    demo's partial fine-tuning and a LoRA rank sweep (4 to 32) besides, so that the tables have more rows than a slide
    holds, and every variant with a grid of three learning rates (the demo's random-init model, as the fake runs need
    no weights)."""
    tiny_en = yaml.safe_load((REPO / "config" / "tiny-en.yaml").read_text())
    variants = copy.deepcopy(tiny_en["train"]["variants"])
    variants["lora"]["ranks"] = [4, 8, 16, 32]
    variants["partial"] = {"layers": 1, "lr": 1e-4}
    for key, spec in variants.items():
        if not family_of_key(key).trained:  # the matched filter has no learning rate
            continue
        lr = spec.get("lr", 1e-3)
        if not (isinstance(lr, list) and len(lr) >= 3):
            lr = lr[0] if isinstance(lr, list) else lr
            spec["lr"] = [float(f"{lr / 3:.3g}"), lr, float(f"{lr * 3:.3g}")]
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["experiment"] = tiny_en["experiment"]
    config["train"].update(variants=variants, seeds=tiny_en["train"]["seeds"], lr_selection="val_loss")
    config["evaluation"] = tiny_en["evaluation"]
    return validate(config, copy.deepcopy(SCHEMA))


def placeholder_figures(out, config) -> None:
    """A plain 16:9 PNG for every figure `config` draws: for a test of the slides' layout, which never depends on
    what a figure shows (an image is fitted to its column), at a fraction of the plot stage's time."""
    from PIL import Image, ImageDraw

    out.mkdir(parents=True)
    for name in figure_names(config):
        image = Image.new("RGB", (1600, 900), "white")
        ImageDraw.Draw(image).rectangle((80, 60, 1520, 840), outline="black", width=6)
        image.save(out / f"{name}.png")


def build_shape_deck(root, config, seeds=None, pdf=False, figures=True, resamples=None) -> dict:
    """The deck of `config`'s shape in `root`/slides, from fake runs of every variant and seed; returns deck.json.

    `figures` False draws placeholders instead of the plot stage's figures; `resamples` sets the bootstrap's
    resamples (fewer: the same tables, faster, with looser intervals)."""
    if seeds is not None:
        config["train"]["seeds"] = seeds
    audio = config["data"]["source"] == "audiofolder"
    labels = np.r_[np.ones(20), np.zeros(20)].astype(int)
    rng = np.random.default_rng(0)
    run_dirs = []
    for variant in expand_variants(config["train"]).values():
        for seed in config["train"]["seeds"]:
            run_dirs.append(root / "runs" / variant.run / f"seed{seed}")
            fake_run(run_dirs[-1], variant, seed, labels, rng, audio, config["evaluation"]["test_sets"])
    if (matched := matched_filter_variant(config["train"])) is not None:  # the workflow's matched_filter rule: one run, first seed
        run_dirs.append(root / "runs" / matched.run / f"seed{config['train']['seeds'][0]}")
        fake_run(run_dirs[-1], matched, config["train"]["seeds"][0], labels, rng, audio, config["evaluation"]["test_sets"])
    model, data = study_inputs(root, config)
    tables = root / "tables"
    default_resamples = aggregate_stage.BOOTSTRAP_RESAMPLES
    aggregate_stage.BOOTSTRAP_RESAMPLES = resamples or default_resamples
    try:
        aggregate(run_dirs, tables, model, data, config)
    finally:
        aggregate_stage.BOOTSTRAP_RESAMPLES = default_resamples
    if not figures:
        placeholder_figures(root / "figures", config)
        return build_deck(tables_dir=tables, figures_dir=root / "figures", config=config, out_dir=root / "slides",
                          source_dir=REPO / "report", snakefile=REPO / "Snakefile", renderer="pandoc", pdf=pdf)
    examples = write_toy_features(root / "toy", {"test": 8})["test"]
    make_figures(tables / "curves.csv", root / "figures", tables / "runs.csv", tables / "auc_by_snr.csv", examples,
                 figures=figure_names(config), summary_csv=tables / "summary.csv", shift_runs_csv=tables / "shift_runs.csv",
                 efficiency_csv=tables / "efficiency.csv", lr_selection=config["train"]["lr_selection"])
    return build_deck(tables_dir=tables, figures_dir=root / "figures", config=config, out_dir=root / "slides",
                      source_dir=REPO / "report", snakefile=REPO / "Snakefile", renderer="pandoc", pdf=pdf)


__all__ = ["build_shape_deck", "demo_config", "study_inputs", "tiny_config", "widest_config"]
