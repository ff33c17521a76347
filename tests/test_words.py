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
