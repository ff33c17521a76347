"""The PowerPoint deck made to open right in PowerPoint and in LibreOffice Impress: a post-processing of the
``slides.pptx`` pandoc (or Quarto) writes.

* **Formulas.** The writer puts every shape holding maths in ``mc:AlternateContent`` whose only choice requires
  ``a14`` (OMML math). LibreOffice takes that choice and drops the maths, so slides lose their equations. Each such
  choice now also requires ``m`` (the OMML namespace PowerPoint reads in it) and gets an ``mc:Fallback``: the same
  shape with every formula as a line of Unicode text (``W₀ + ΔW = W₀ + BA``), which LibreOffice, which does not list
  ``a14 m`` among the choices it takes, shows instead.
* **Tables** on a full-width body: the writer puts a table with a sentence above it on "Content with Caption", a
  5.6-inch column; such slides move to "Title and Content", the sentence above the table, the table across the
  slide, its text sized to its columns.
* **Code** sized to fit its box: the font of a text box holding code shrinks until its longest line and all its
  lines fit (down to :data:`MIN_POINTS`).

Section headers are real section slides through the reference deck (:func:`gwlora.deck.pptx_reference`).
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

from lxml import etree

NS = {
    "a": "http://schemas.openxmlformats.org/drawingml/2006/main",
    "a14": "http://schemas.microsoft.com/office/drawing/2010/main",
    "m": "http://schemas.openxmlformats.org/officeDocument/2006/math",
    "mc": "http://schemas.openxmlformats.org/markup-compatibility/2006",
    "p": "http://schemas.openxmlformats.org/presentationml/2006/main",
}
# the smallest text a slide shows: what would need less, the deck source splits across slides before it gets here
# (gwlora.deck's table_parts and yaml_parts); tests/test_pptx.py checks that every box holds its lines at its size
MIN_POINTS = 7
CODE_FONTS = ("courier", "consolas", "menlo", "monaco", "dejavu sans mono")
LINE_SPACING = 1.2  # a line's height per point of font size
MONO_WIDTH, TEXT_WIDTH = 0.6, 0.5  # a character's width per point of font size, monospaced and proportional
# in a table cell: digits, "±" and brackets are wider than text's average (Calibri's, and Carlito's in LibreOffice, 0.51)
TABLE_WIDTH = 0.55
CELL_MARGIN_PT = 3.6  # a table cell's left and right margins each (0.05 inch; python-pptx leaves LibreOffice's 0.1 inch)
INSET_PT = 14.4  # a text box's left + right (and top + bottom) insets, 0.1 inch each

SUBSCRIPTS = dict(zip("0123456789+-=()aeijoruvxhklmnpst", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ₐₑᵢⱼₒᵣᵤᵥₓₕₖₗₘₙₚₛₜ"))
SUPERSCRIPTS = dict(zip("0123456789+-=()inT", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁱⁿᵀ"))


def _q(tag: str) -> str:
    prefix, name = tag.split(":")
    return f"{{{NS[prefix]}}}{name}"


def _script(text: str, table: dict, mark: str) -> str:
    """`text` in Unicode sub- or superscript characters where each has one, else ``_x`` / ``^(xy)``."""
    text = text.strip()
    if text and all(c in table for c in text):
        return "".join(table[c] for c in text)
    return f"{mark}{text}" if len(text) == 1 else f"{mark}({text})"


def _child(el, name: str):
    return el.find(_q(f"m:{name}"))


def omml_text(el) -> str:
    """An OMML formula as one line of Unicode text: scripts as sub/superscript characters, fractions as a/b, roots as
    √(x), delimiters kept; what is unknown reads as the text of its parts."""
    tag = etree.QName(el).localname
    part = lambda name: omml_text(_child(el, name)) if _child(el, name) is not None else ""  # noqa: E731
    if tag == "t":
        return el.text or ""
    if tag in ("sSub", "sSup", "sSubSup"):
        sub = _script(part("sub"), SUBSCRIPTS, "_") if tag != "sSup" else ""
        sup = _script(part("sup"), SUPERSCRIPTS, "^") if tag != "sSub" else ""
        return part("e") + sub + sup
    if tag == "f":
        num, den = part("num"), part("den")
        wrap = lambda s: s if len(s) <= 2 else f"({s})"  # noqa: E731
        return f"({wrap(num)}/{wrap(den)})"  # in brackets: α/r B A x would read as α/(rBAx)
    if tag == "rad":
        return f"√({part('e')})" if len(part("e")) > 1 else f"√{part('e')}"
    if tag == "d":
        props = _child(el, "dPr")
        chr_of = lambda name, default: (props.find(_q(f"m:{name}")).get(_q("m:val")) if props is not None  # noqa: E731
                                        and props.find(_q(f"m:{name}")) is not None else default)
        inner = chr_of("sepChr", ",").join(omml_text(e) for e in el.findall(_q("m:e")))
        return chr_of("begChr", "(") + inner + chr_of("endChr", ")")
    if tag == "func":
        return part("fName") + " " + part("e")
    if tag.endswith("Pr") or tag == "rPr":
        return ""
    return "".join(omml_text(c) for c in el)


def _math_as_text(shape) -> None:
    """Every ``a14:m`` formula of `shape` replaced by a run of its Unicode text (display formulas centred)."""
    for formula in shape.iter(_q("a14:m")):
        paragraph = formula.getparent()
        display = formula.find(_q("m:oMathPara")) is not None
        run = etree.SubElement(paragraph, _q("a:r"))
        etree.SubElement(run, _q("a:rPr"), {"lang": "en-GB", "i": "0"})
        etree.SubElement(run, _q("a:t")).text = omml_text(formula).strip()
        paragraph.replace(formula, run)
        if display:
            props = paragraph.find(_q("a:pPr"))
            if props is None:
                props = etree.Element(_q("a:pPr"))
                paragraph.insert(0, props)
            props.set("algn", "ctr")
    return None


def add_math_fallbacks(slide_xml) -> int:
    """Each maths-only choice of `slide_xml` (an lxml tree of a slide) given an ``mc:Fallback`` with the formulas as
    text, and made to require ``m`` too, so that a reader without OMML in text takes the fallback. Returns how many."""
    added = 0
    for content in slide_xml.iter(_q("mc:AlternateContent")):
        choice = content.find(_q("mc:Choice"))
        if choice is None or content.find(_q("mc:Fallback")) is not None or "a14" not in choice.get("Requires", "").split():
            continue
        if next(choice.iter(_q("a14:m")), None) is None:
            continue
        fallback = etree.SubElement(content, _q("mc:Fallback"))
        for shape in choice:
            copied = copy.deepcopy(shape)
            _math_as_text(copied)
            fallback.append(copied)
        # lxml cannot declare a namespace on an existing element: the choice is rebuilt with `m` declared on it
        rebuilt = etree.Element(_q("mc:Choice"), {"Requires": "a14 m"}, nsmap={"a14": NS["a14"], "m": NS["m"]})
        rebuilt.extend(list(choice))
        content.replace(choice, rebuilt)
        added += 1
    return added


def fit_font(lines: list[tuple[str, bool]], width_pt: float, height_pt: float, largest: float) -> float:
    """The largest font size (points, half-point steps, at most `largest`, at least :data:`MIN_POINTS`) at which
    `lines` (text, monospaced?) fit a box of `width_pt` × `height_pt`: a code line must fit its width, a line of
    text wraps."""
    size = largest
    usable_w, usable_h = width_pt - INSET_PT, height_pt - INSET_PT
    while size > MIN_POINTS:
        mono_chars, text_chars = usable_w / (size * MONO_WIDTH), usable_w / (size * TEXT_WIDTH)
        if all(len(text) <= mono_chars for text, mono in lines if mono):
            rows = sum(1 if mono else max(1, math.ceil(len(text) / text_chars)) for text, mono in lines)
            if rows * size * LINE_SPACING <= usable_h:
                return size
        size -= 0.5
    return MIN_POINTS


def fix_pptx(path: Path) -> dict:
    """Post-process the deck at `path` in place (see the module's docstring); returns what was changed, by kind."""
    from pptx import Presentation

    deck = Presentation(str(path))
    layouts = {layout.name: layout for layout in deck.slide_layouts}
    changed = {"math_fallbacks": 0, "table_slides": 0, "code_boxes": 0, "titles_sized": 0}
    for slide in deck.slides:
        changed["math_fallbacks"] += add_math_fallbacks(slide._element)
        if slide.slide_layout.name == "Content with Caption" and any(s.has_table for s in slide.shapes):
            full_width_table(slide, layouts["Title and Content"], deck.slide_width, deck.slide_height)
            changed["table_slides"] += 1
        else:  # a table alone under its title, where the writer put it: sized to its columns all the same
            for frame in (s for s in slide.shapes if s.has_table):
                margin = int(deck.slide_width * 0.05)
                size_table(frame, margin, frame.top, deck.slide_width - 2 * margin, deck.slide_height - frame.top - int(deck.slide_height * 0.04))
        changed["code_boxes"] += fit_code(slide, deck.slide_width, deck.slide_height)
        changed["titles_sized"] += fit_title(slide)
    deck.save(str(path))
    return changed


def full_width_table(slide, layout, slide_width: int, slide_height: int) -> None:
    """A table slide on `layout` (a full-width body): the sentences above the table, the table across the slide with
    its columns scaled to that width and its text sized to fit."""
    from pptx.enum.shapes import PP_PLACEHOLDER
    from pptx.util import Emu, Pt

    for rel in slide.part.rels.values():
        if rel.reltype.endswith("/slideLayout"):
            rel._target = layout.part
            for cached in ("target_part", "target_partname"):  # python-pptx keeps the old layout once read (lazy properties)
                rel.__dict__.pop(cached, None)
    title = slide.shapes.title
    placeholder = next((p for p in layout.placeholders if p.placeholder_format.type == PP_PLACEHOLDER.TITLE), None)
    if title is not None and placeholder is not None:  # the old layout's 3.3-inch caption title wraps to four lines: the new layout's full-width box
        title.left, title.top, title.width, title.height = placeholder.left, placeholder.top, placeholder.width, placeholder.height
    margin, top = int(slide_width * 0.05), int(slide_height * 0.2)
    width = slide_width - 2 * margin
    for content in slide._element.iter(_q("mc:AlternateContent")):  # a sentence holding a formula, unseen by python-pptx
        height = int(slide_height * 0.14)
        for sp in content.iter(_q("p:sp")):
            _place(sp, margin, top, width, height)
        top += height
    texts = [s for s in slide.shapes if s.has_text_frame and s != slide.shapes.title and s.text_frame.text.strip()]
    for shape in texts:
        lines = [(p.text, False) for p in shape.text_frame.paragraphs]
        height = int(slide_height * 0.14)
        shape.left, shape.top, shape.width, shape.height = margin, top, width, height
        size = fit_font(lines, Emu(width).pt, Emu(height).pt, largest=14)
        for paragraph in shape.text_frame.paragraphs:
            for run in paragraph.runs:
                run.font.size = Pt(size)
        top += height
    frame = next(s for s in slide.shapes if s.has_table)
    size_table(frame, margin, top, width, slide_height - top - int(slide_height * 0.04))


def title_points(slide) -> float:
    """The size (points) a slide's title is shown at: its runs' own, else its layout's title style, else its master's."""
    title = slide.shapes.title
    own = [r.font.size.pt for p in title.text_frame.paragraphs for r in p.runs if r.font.size]
    if own:
        return min(own)
    for part in (slide.slide_layout, slide.slide_layout.slide_master):
        style = ".//p:ph[@type='title']/../../..//a:lvl1pPr/a:defRPr" if part is slide.slide_layout else ".//p:titleStyle/a:lvl1pPr/a:defRPr"
        sizes = [el.get("sz") for el in part._element.xpath(style) if el.get("sz")]
        if sizes:
            return int(sizes[0]) / 100
    return 44.0  # PowerPoint's default title size


def fit_title(slide) -> int:
    """The title of `slide` sized down (never up) until its words fit its box (:func:`fit_font`); returns 1 when it was."""
    from pptx.util import Emu, Pt

    title = slide.shapes.title
    if title is None or title.width is None or not title.text_frame.text.strip():
        return 0
    largest = title_points(slide)
    size = fit_font([(title.text_frame.text, False)], Emu(title.width).pt, Emu(title.height).pt, largest=largest)
    if size >= largest:
        return 0
    for paragraph in title.text_frame.paragraphs:
        for run in paragraph.runs:
            run.font.size = Pt(size)
    return 1


def _place(sp, left: int, top: int, width: int, height: int) -> None:
    """Give the shape element `sp` its own position and size (instead of its layout placeholder's)."""
    props = sp.find(_q("p:spPr"))
    for old in props.findall(_q("a:xfrm")):
        props.remove(old)
    xfrm = etree.Element(_q("a:xfrm"))
    etree.SubElement(xfrm, _q("a:off"), {"x": str(left), "y": str(top)})
    etree.SubElement(xfrm, _q("a:ext"), {"cx": str(width), "cy": str(height)})
    props.insert(0, xfrm)


def cell_chars(heading, cells) -> int:
    """What a table column needs, in characters: its longest cell, or its heading's longest word (a heading wraps at
    its spaces); at least 1. The PPTX's column widths and the deck's split of wide tables (gwlora.deck) both count so."""
    return max([len(str(c)) for c in cells] + [len(w) for w in str(heading).split()] + [1])


def size_table(frame, left: int, top: int, width: int, height: int) -> None:
    """The table of `frame` at `left`, `top`, across `width`: each column as wide as its longest cell needs (a heading
    may wrap at its spaces), the text as large as lets every cell stay on one line and the rows fit `height`."""
    from pptx.util import Emu, Pt

    table = frame.table
    rows = [[cell.text for cell in row.cells] for row in table.rows]
    chars = [cell_chars(rows[0][c], [r[c] for r in rows[1:]]) for c in range(len(rows[0]))]
    margins = 2 * CELL_MARGIN_PT * len(chars)
    size = (Emu(width).pt - margins) / (sum(chars) * TABLE_WIDTH)
    for column, n in zip(table.columns, chars):  # each column its text at `size` and its margins, the rest shared alike
        column.width = Emu(int(Pt(n * TABLE_WIDTH * size + 2 * CELL_MARGIN_PT)))
    header_lines = max(math.ceil(len(rows[0][c]) * size * TABLE_WIDTH / max(1.0, table.columns[c].width.pt - 2 * CELL_MARGIN_PT))
                       for c in range(len(chars)))
    # a line, the cell's top and bottom margins, and what LibreOffice adds to a row (measured on its rendering)
    row_pt = lambda pts: pts * LINE_SPACING * 1.5 + 4  # noqa: E731
    while size > MIN_POINTS and row_pt(size) * (len(rows) - 1 + header_lines) > 0.85 * Emu(height).pt:
        size -= 0.5
    size = max(MIN_POINTS, min(10 if len(chars) > 8 else 12, size))
    for row in table.rows:
        row.height = Emu(int(Pt(row_pt(size))))
        for cell in row.cells:
            cell.margin_top = cell.margin_bottom = Emu(int(Pt(2)))
            cell.margin_left = cell.margin_right = Emu(int(Pt(CELL_MARGIN_PT)))
            for paragraph in cell.text_frame.paragraphs:
                for run in paragraph.runs:
                    run.font.size = Pt(size)
    frame.left, frame.top, frame.width = left, top, sum(c.width for c in table.columns)
    frame.height = Emu(sum(r.height for r in table.rows))


def _is_code(paragraph) -> bool:
    runs = [r for r in paragraph.runs if r.text.strip()]
    return bool(runs) and all((r.font.name or "").lower().startswith(CODE_FONTS) for r in runs)


def fit_code(slide, slide_width: int, slide_height: int) -> int:
    """Every text box of `slide` that holds a code block, its font sized so that its lines fit the box; returns how
    many were sized."""
    from pptx.util import Emu, Pt

    sized = 0
    for shape in slide.shapes:
        if not shape.has_text_frame or shape == slide.shapes.title:
            continue
        paragraphs = shape.text_frame.paragraphs
        if not any(_is_code(p) for p in paragraphs):
            continue
        width = shape.width or int(slide_width * 0.9)
        height = shape.height or int(slide_height * 0.75)
        lines = [(line, _is_code(p)) for p in paragraphs for line in re.split(r"[\v\n]", p.text)]
        size = fit_font(lines, Emu(width).pt, Emu(height).pt, largest=14)
        for paragraph in paragraphs:
            for run in paragraph.runs:
                run.font.size = Pt(size)
        sized += 1
    return sized
