"""Words of the docs and config comments: the original study is named as such, never as "the presentation"."""

import re

import pytest

from conftest import REPO

PROSE = [REPO / "README.md", REPO / "config" / "README.md", *sorted((REPO / "config").glob("*.yaml")),
         *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "benchmarks").glob("*.py"))]


@pytest.mark.parametrize("path", PROSE, ids=lambda p: str(p.relative_to(REPO)))
def test_the_original_study_is_not_called_the_presentation(path):
    """'the presentation' reads as a talk the reader should know; README.md introduces the original study as a presentation."""
    text = " ".join(path.read_text().split())  # across line breaks and comment markers' indentation
    text = re.sub(r"\s*#\s*", " ", text)
    assert not re.search(r"\bthe presentation\b", text, re.I), path


def test_the_two_behaviours_kept_by_design_are_documented():
    """An empty test-set override and prompts longer than the clip at clip context look like slips and are not."""
    text = " ".join((REPO / "config" / "README.md").read_text().split())
    assert "Two things are accepted on purpose" in text
    assert "`evaluation.test_sets: {same: {}}`) is a fresh test set of the training distribution" in text
    assert "With `model.context: clip`, prompts longer than the clip" in text and "lengthen the encoder's sequence" in text


SLIDES = REPO / "report" / "slides.qmd"


@pytest.mark.parametrize("garbled", ["up to the light travel time between them apart", "a single timing can vary", "timing_noise",
                                     "Highest validation AUC", "highest AUC {{ t.best }}", "{{ n_variants }} variants ×", "adapted {{ n_variants }} ways",
                                     "`snakemake --cores all` rebuilds"])
def test_the_slides_say_nothing_the_counts_or_the_rules_do_not_support(garbled):
    """Words a reader saw that did not fit the data: a fixed ±10% noise, "best" by another metric than the lr selection, counts of
    variants where the runs were variant-lr pairs, the two baselines counted as ways of adapting, the full study's command for the demo's."""
    assert garbled not in SLIDES.read_text()


def test_the_fixed_texts_follow_the_data_source():
    """The implementation slide's title and the shifted sets' seed words hold for strain and say otherwise for audio."""
    text = SLIDES.read_text()
    assert "## Implementation: {% if audio %}" in text
    assert "{% if audio %}drawn with the experiment's own\ndata seed" in text


def test_the_readme_says_which_shifted_test_sets_draw_with_their_own_data_seed():
    """config.split_source: an audio set keeps the experiment's seed (it splits a folder by it); the others draw with their own."""
    text = " ".join((REPO / "README.md").read_text().split())
    assert "(the training data with its overrides, its own data seed)" not in text
    assert "simulated and GWOSC sets draw with their own data seed, no window shared, audio sets keep the experiment's seed" in text


def test_the_readme_names_snakemake_in_the_venv_where_the_venv_is_not_activated():
    text = " ".join((REPO / "README.md").read_text().split())
    assert "From a shell without the virtual environment activated, run `.venv/bin/snakemake`: a bare `snakemake` is not found there." in text


def test_a_missing_local_encoder_names_its_absolute_path_and_a_matching_model(tmp_path, monkeypatch):
    from gwlora.config import _check_local_model
    from gwlora.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(ConfigError) as caught:
        _check_local_model("models/whisper-tiny.en-encoder")
    message = str(caught.value)
    assert str(tmp_path / "models" / "whisper-tiny.en-encoder") in message and "'openai/whisper-tiny.en'" in message
    assert "whisper-small" not in message


# --------------------------------------------------------------------------- the sentences as a reader reads them

def several_lr_demo() -> dict:
    """config/demo.yaml with full fine-tuning's learning rate chosen from two, so that the lr-selection sentence shows."""
    import copy

    import yaml

    from conftest import SCHEMA
    from gwlora.config import validate

    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["train"]["variants"]["full"]["lr"] = [1.0e-4, 3.0e-4]
    return validate(config, copy.deepcopy(SCHEMA))


@pytest.fixture(scope="module", params=[[0], [0, 1, 2]], ids=["1 seed", "3 seeds"])
def rendered(request, tmp_path_factory):
    """The filled slides.qmd of a demo-shaped deck (fake runs, the matched filter's too) as a reader reads it: escapes
    undone, lines joined; and its number of seeds."""
    from shape_decks import build_shape_deck

    root = tmp_path_factory.mktemp("words")
    build_shape_deck(root, several_lr_demo(), seeds=request.param, figures=False, resamples=200)
    text = re.sub(r"\\(.)", r"\1", (root / "slides" / "slides.qmd").read_text())
    return " ".join(text.split()), len(request.param)


def test_a_timing_verdict_ends_its_phrase_and_is_said_once_a_sentence(rendered):
    """"0.93×, not resolved by these timings that of full fine-tuning" once read so: the verdict followed by more words."""
    from gwlora.findings import NOT_RESOLVED

    text, seeds = rendered
    for m in re.finditer(re.escape(NOT_RESOLVED), text):
        assert re.match(r"(\*\*)?([.;)]| \()", text[m.end():]), text[m.start() - 80 : m.end() + 40]
    for sentence in re.split(r"(?<=[.;])\s", text):
        assert sentence.count(NOT_RESOLVED) <= 1, sentence
    step = re.search(r"Step time: (.*?);", text).group(1)
    assert re.fullmatch(r"\d\.\d\d× that of full fine-tuning(, " + NOT_RESOLVED + ")?", step)
    assert (NOT_RESOLVED in step) == (seeds < 3)
    assert re.search(r"LoRA unmerged [\d.]+ ms \(\d\.\d\d× the base's(, " + NOT_RESOLVED + r")?\); merged [\d.]+ ms \(\d\.\d\d× the base's", text)
    assert re.search(r"Its training step took \d\.\d\d× the time of full fine-tuning's: (a difference " + NOT_RESOLVED + " \\(|faster in every seed)", text)
    assert "the frozen encoder’s" not in text or "set against the frozen encoder’s, which trained on cached encoder outputs" in text
    assert ("Step times of frozen, partial-top1: trained on cached encoder outputs (its step skips the frozen encoder), "
            "not comparable with the others'.") in text


def test_the_lr_is_chosen_by_a_metric_over_the_seeds_there_were(rendered):
    text, seeds = rendered
    over = "one seed" if seeds == 1 else f"the mean over {seeds} seeds"
    assert f"each variant's is chosen from its list by **val loss** ({over}), on validation only" in text
    assert "by the the" not in text and "seeds val loss" not in text


def test_the_counts_are_of_trained_runs_and_ways_of_adapting(rendered):
    """The matched filter trains nothing; full fine-tuning and the frozen encoder are the baselines, not ways of adapting."""
    text, seeds = rendered
    assert "adapted 7 ways beside its baselines" in text
    assert ("comparing 7 ways to adapt it with full fine-tuning and the frozen encoder, each trained at its best learning rate, "
            "and with the optimal detector, a matched filter.") in text
    runs = 10 * seeds  # 9 variants, full fine-tuning at two learning rates
    assert f"{runs} training runs (10 variant–learning-rate pairs × {seeds} seed{'s' if seeds > 1 else ''})" in text
    assert re.search(rf"\d+ of {runs} training runs \(the reasons", text) or "Runs that did not learn" not in text


def test_the_main_results_table_says_which_variants_did_not_learn(rendered):
    text, seeds = rendered
    quality = re.search(r"## Results: quality.*?(\| variant .*?\|)\s*\|[:-]", text).group(1)
    assert [c.strip() for c in quality.strip("|").split("|")][:2] == ["variant", "did not learn"]
