"""The PowerPoint deck opens right in PowerPoint and in LibreOffice: formulas shown, tables across the slide, code and
text inside their boxes, section headers as section slides.

The deck is one of config/demo.yaml's shape, from fake runs (tests/shape_decks.py). LibreOffice, where installed
(CI installs it; GWLORA_REQUIRE_LIBREOFFICE makes its absence a failure), converts it once, to its own flat format,
which says what Impress made of every slide: its text and every frame's place on the page.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from shape_decks import build_shape_deck, demo_config
from gwlora.pptx_deck import NS, omml_text

FORMULAS = {"The low-rank hypothesis": "W₀+ΔW=W₀+BA", "Fine-tuning a weight matrix": "h=W₀x+ΔWx"}


@pytest.fixture(scope="module")
def pptx(tmp_path_factory):
    root = tmp_path_factory.mktemp("pptx-deck")
    build_shape_deck(root, demo_config(), figures=False, resamples=200)
    return root / "slides" / "slides.pptx"


@pytest.fixture(scope="module")
def deck(pptx):
    from pptx import Presentation

    return Presentation(str(pptx))


def test_formulas_have_a_text_fallback_for_readers_without_omml(deck):
    for slide in deck.slides:
        for content in slide._element.iter(f"{{{NS['mc']}}}AlternateContent"):
            assert content.find(f"{{{NS['mc']}}}Fallback") is not None, slide.shapes.title.text
    fallbacks = {s.shapes.title.text: "".join(t for f in s._element.iter(f"{{{NS['mc']}}}Fallback") for t in f.itertext())
                 for s in deck.slides}
    for title, formula in FORMULAS.items():
        assert formula in fallbacks[title]


def test_omml_reads_as_unicode_text():
    from lxml import etree

    m = NS["m"]
    xml = (f'<m:oMath xmlns:m="{m}"><m:sSub><m:e><m:r><m:t>W</m:t></m:r></m:e><m:sub><m:r><m:t>0</m:t></m:r></m:sub></m:sSub>'
           f'<m:f><m:num><m:r><m:t>α</m:t></m:r></m:num><m:den><m:r><m:t>r</m:t></m:r></m:den></m:f><m:r><m:t>BA</m:t></m:r></m:oMath>')
    assert omml_text(etree.fromstring(xml)) == "W₀(α/r)BA"


def test_tables_span_the_slide_and_sections_are_section_slides(deck):
    width = deck.slide_width
    for slide in deck.slides:
        title = slide.shapes.title.text
        for frame in (s for s in slide.shapes if s.has_table):
            assert slide.slide_layout.name == "Title and Content", title
            assert frame.width >= 0.85 * width, title
    sections = [s for s in deck.slides if s.slide_layout.name == "Section Header"]
    assert [s.shapes.title.text for s in sections][:3] == ["Introduction", "Background", "Fine-Tuning and Parameter-Efficient Adaptation"]
    layout_title = sections[0].slide_layout.placeholders[0]
    assert layout_title.top > 0.2 * deck.slide_height and layout_title.top + layout_title.height < 0.8 * deck.slide_height
    assert 'algn="ctr"' in layout_title._element.xml


def test_every_table_cell_stays_on_one_line_and_every_heading_word_fits_its_column(deck):
    """LibreOffice showed a "step time (ms)" column one character a line: its cells had 0.1-inch margins the widths did not
    count, and the widths an estimate of 0.5 a point per digit. At 0.55 and the margins set, every cell fits its column."""
    from gwlora.pptx_deck import CELL_MARGIN_PT, MIN_POINTS, TABLE_WIDTH

    for number, slide in enumerate(deck.slides, 1):
        for frame in (s for s in slide.shapes if s.has_table):
            table = frame.table
            for r, row in enumerate(table.rows):
                for column, cell in zip(table.columns, row.cells):
                    assert cell.margin_left.pt == cell.margin_right.pt == CELL_MARGIN_PT, number
                    size = next((run.font.size.pt for p in cell.text_frame.paragraphs for run in p.runs if run.font.size), None)
                    if size is None:
                        continue
                    assert size >= MIN_POINTS, number
                    room = column.width.pt - 2 * CELL_MARGIN_PT
                    longest = max(map(len, cell.text.split() if r == 0 else [cell.text]), default=0)  # a heading wraps at spaces
                    assert longest * size * TABLE_WIDTH <= room + 0.5, (number, cell.text, size, column.width.pt)


def test_a_table_wider_than_a_slide_continues_by_columns_each_part_led_by_the_variant():
    import pandas as pd

    from gwlora.deck import TABLE_CHARS_PER_SLIDE, _markdown_parts, column_chars, column_groups

    table = pd.DataFrame({"variant": ["lora-r8", "full"], **{f"metric {i} (ms)": ["123.45 ± 6.78", "1.00 ± 0.01"] for i in range(11)}})
    groups = column_groups(table)
    assert len(groups) == 2 and [c for g in groups for c in g] == list(table.columns[1:])
    assert all(sum(column_chars(table[["variant", *g]])) <= TABLE_CHARS_PER_SLIDE for g in groups)
    assert abs(len(groups[0]) - len(groups[1])) <= 1  # as even as they can be
    parts = _markdown_parts(table)
    assert len(parts) == 2 and all(str(p).startswith("| variant") for p in parts)
    assert column_groups(table.iloc[:, :4]) == [list(table.columns[1:4])]  # a table that fits: one part


def test_every_shape_lies_within_the_slide(deck):
    for number, slide in enumerate(deck.slides, 1):
        for shape in slide.shapes:
            if shape.width is None or shape.left is None:
                continue
            assert 0 <= shape.left and shape.left + shape.width <= deck.slide_width * 1.001, (number, shape.name)
            assert 0 <= shape.top and shape.top + shape.height <= deck.slide_height * 1.001, (number, shape.name)


def test_every_title_fits_its_box(deck):
    """A table slide's title once kept "Content with Caption"'s 3.3-inch box: four lines in LibreOffice, over the sentence
    below. Every title now spans its layout's width, and its words, at the size it is shown at, fit its box."""
    import math

    from pptx.util import Emu

    from gwlora.pptx_deck import INSET_PT, LINE_SPACING, TEXT_WIDTH, title_points

    for number, slide in enumerate(deck.slides, 1):
        title = slide.shapes.title
        assert title is not None and title.text_frame.text.strip(), f"slide {number} has no title"
        if any(s.has_table for s in slide.shapes):
            assert title.width >= 0.85 * deck.slide_width, (number, title.text_frame.text)
        size, text = title_points(slide), title.text_frame.text
        lines = math.ceil(len(text) * size * TEXT_WIDTH / (Emu(title.width).pt - INSET_PT))
        assert lines * size * LINE_SPACING <= Emu(title.height).pt - INSET_PT + 0.5, (number, text, size, lines)


def test_code_is_sized_to_fit_its_box(deck):
    """Each code line fits the box's width, and all its lines (counted at their line breaks, a code block being one
    paragraph) its height: the configuration's ~54 lines once ran off the bottom at the 7 pt floor."""
    import math

    from gwlora.pptx_deck import LINE_SPACING, MIN_POINTS, MONO_WIDTH, INSET_PT, TEXT_WIDTH, _is_code

    for slide in deck.slides:
        for shape in slide.shapes:
            if not shape.has_text_frame or not any(_is_code(p) for p in shape.text_frame.paragraphs):
                continue
            height = 0.0
            for paragraph in shape.text_frame.paragraphs:
                size = next((r.font.size.pt for r in paragraph.runs if r.font.size), 14)
                width = (MONO_WIDTH if _is_code(paragraph) else TEXT_WIDTH) * size
                height += sum(max(1, math.ceil(len(line) * width / (shape.width.pt - INSET_PT)))
                              for line in re.split(r"[\v\n]", paragraph.text)) * size * LINE_SPACING
                assert size >= MIN_POINTS, slide.shapes.title.text
            assert height <= shape.height.pt - INSET_PT + 1, (slide.shapes.title.text, height, shape.height.pt)
            for paragraph in (p for p in shape.text_frame.paragraphs if _is_code(p)):
                size = next(r.font.size.pt for r in paragraph.runs if r.font.size)
                longest = max(map(len, re.split(r"[\v\n]", paragraph.text)))
                assert longest * size * MONO_WIDTH <= shape.width.pt - INSET_PT + 1, (slide.shapes.title.text, paragraph.text[:40])


def _length(value: str) -> float:
    number, unit = re.fullmatch(r"(-?[\d.]+)(cm|in|mm|pt)", value).groups()
    return float(number) * {"cm": 1.0, "in": 2.54, "mm": 0.1, "pt": 2.54 / 72}[unit]


def test_libreoffice_shows_every_formula_and_keeps_every_frame_on_its_page(pptx, deck, tmp_path):
    office = shutil.which("soffice") or shutil.which("libreoffice")
    if office is None:
        if os.environ.get("GWLORA_REQUIRE_LIBREOFFICE"):
            pytest.fail("GWLORA_REQUIRE_LIBREOFFICE is set but LibreOffice (soffice) is not on PATH")
        pytest.skip("LibreOffice is not installed (CI installs libreoffice-impress)")
    subprocess.run([office, "--headless", f"-env:UserInstallation=file://{tmp_path}/profile", "--convert-to", "fodp",
                    "--outdir", str(tmp_path), str(pptx)], check=True, capture_output=True, timeout=300)
    flat = (tmp_path / "slides.fodp").read_text()
    sizes = [(_length(w), _length(h)) for w, h in re.findall(r'fo:page-width="([^"]+)" fo:page-height="([^"]+)"', flat)]
    page_w, page_h = max(sizes)  # the slides' (16:9); the notes pages' are A4 upright
    pages = [re.sub(r"<presentation:notes.*?</presentation:notes>", "", p, flags=re.S)  # the slide, not its notes page
             for p in re.findall(r"<draw:page .*?</draw:page>", flat, re.S)]
    assert len(pages) == len(deck.slides)
    texts = {" ".join(re.sub(r"<[^>]+>", " ", p).split()): p for p in pages}
    for title, formula in FORMULAS.items():
        assert any(text.startswith(title) and formula in text for text in texts), title
    for number, body in enumerate(pages, 1):
        for frame in re.findall(r"<draw:frame [^>]*>", body):
            box = {k: _length(v) for k, v in re.findall(r'svg:(x|y|width|height)="([^"]+)"', frame)}
            if len(box) == 4:
                assert box["x"] + box["width"] <= page_w + 0.05 and box["y"] + box["height"] <= page_h + 0.05, (number, frame[:120])


def test_every_text_box_holds_its_text(pptx):
    from test_report import pptx_problems

    assert pptx_problems(pptx) == []


def test_a_long_configuration_continues_on_slides_that_each_read_as_yaml():
    import yaml

    from gwlora.deck import CODE_LINES_PER_SLIDE, config_sections, yaml_parts

    sections = config_sections(demo_config())
    assert len(sections["model and training"]) >= 2
    for name, parts in sections.items():
        for text in parts:
            assert len(text.splitlines()) <= CODE_LINES_PER_SLIDE and isinstance(yaml.safe_load(text), dict), (name, text)
        continued = [line for text in parts for line in text.splitlines() if not line.endswith("  # continued")]
        assert "\n".join(continued) == yaml.safe_dump(yaml.safe_load("\n".join(continued)), sort_keys=False,
                                                     default_flow_style=None, width=70).rstrip()  # nothing lost, nothing twice
    text = "a:\n  b:\n" + "".join(f"    k{i}: {i}\n" for i in range(30)) + "c: 1"
    parts = yaml_parts(text, per_slide=12)
    assert parts[1].startswith("a:  # continued\n  b:  # continued\n    k") and all(len(p.splitlines()) <= 12 for p in parts)
