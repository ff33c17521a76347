"""Whisper's front-end facts, the split names and the source kinds are defined once, in gwlora.constants."""

import re

from conftest import REPO
from gwlora import constants

# Literals that restate a constant. The config schema (workflow/schemas) owns the config's defaults and
# allowed values, so it is not searched; neither are the tests, which may check the constants.
RESTATED = {
    "the 16 kHz sample rate": re.compile(r"\b16_?000\b"),
    "the split names": re.compile(r"""["']train["'],\s*["']val["'],\s*["']test["']"""),
    "the 80 mel bins": re.compile(r"(?<![\w.])80(?![\w.])"),
}
SEARCHED = ["src/**/*.py", "benchmarks/*.py", "workflow/rules/*.smk", "Snakefile", "report/slides.qmd"]


def test_the_constants_hold_whispers_front_end():
    assert constants.WHISPER_FRAMES_PER_SECOND == 100
    assert constants.WHISPER_FULL_FRAMES == 3000 and constants.WHISPER_FULL_POSITIONS == 1500
    assert constants.SPLITS == ("train", "val", "test")
    assert set(constants.SOURCES) == set(constants.INJECTION_SOURCES) | set(constants.AUDIO_SOURCES)


def test_no_module_restates_a_constant():
    found = []
    for pattern in SEARCHED:
        for path in sorted(REPO.glob(pattern)):
            if path.name == "constants.py":
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0] if path.suffix in (".py", ".smk", "") else line
                found += [f"{path.relative_to(REPO)}:{number}: {what}" for what, rx in RESTATED.items() if rx.search(code)]
    assert found == []
