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
