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


def test_the_readme_names_snakemake_in_the_venv_where_the_venv_is_not_activated():
    text = " ".join((REPO / "README.md").read_text().split())
    assert "`.venv/bin/snakemake --cores 2 --configfile config/demo.yaml` in a fresh copy, run from a shell without the virtual environment activated" in text


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
